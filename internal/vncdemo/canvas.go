package vncdemo

import (
	"sync"
	"time"
)

// Colours of the picture, 0xRRGGBB. The package documentation lists the ones
// tests rely on.
const (
	colourBackground = 0x202020
	colourRed        = 0xff0000
	colourGreen      = 0x00ff00
	colourBlue       = 0x0000ff
	colourWhite      = 0xffffff
	colourBlack      = 0x000000
	colourYellow     = 0xffff00
	colourMagenta    = 0xff00ff
	colourText       = 0xdcdcdc
	colourClock      = 0x00c8c8
	colourBar        = 0xff8000
)

// Layout of the picture.
const (
	cornerSize  = 32
	indicatorX  = 48
	textX       = 96
	textY       = 9
	textScale   = 2
	textMax     = 16 // characters shown
	clockScale  = 8
	clockLen    = len("15:04:05")
	dotRadius   = 4 // a 9x9 square
	barWidth    = 48
	barHeight   = 8
	barGap      = 24 // between the clock and the bar's track
	barStep     = 8  // pixels per animation tick
	frameTicker = 100 * time.Millisecond
)

// canvas is the one framebuffer every client shares, the state it is drawn
// from, and the clients to tell about changes.
type canvas struct {
	w, h int

	mu        sync.RWMutex
	pix       []uint32 // 0xRRGGBB, row by row
	keyDown   bool     // a key was pressed since start
	typed     []byte   // the last characters typed, at most textMax
	clock     string
	barX      int      // left edge of the bar, relative to its track
	barDir    int      // +1 or -1
	dots      []uint64 // bitmap of magenta pixels
	observers map[*session]struct{}
}

func newCanvas(w, h int, now time.Time) *canvas {
	c := &canvas{
		w: w, h: h,
		pix:       make([]uint32, w*h),
		dots:      make([]uint64, (w*h+63)/64),
		clock:     now.Format("15:04:05"),
		barDir:    1,
		observers: make(map[*session]struct{}),
	}
	c.paint(c.bounds())
	return c
}

func (c *canvas) bounds() rect { return rect{0, 0, c.w, c.h} }

func (c *canvas) clockRect() rect {
	cw := clockLen*(glyphW+1)*clockScale - clockScale
	ch := glyphH * clockScale
	return xywh((c.w-cw)/2, (c.h-ch)/2, cw, ch)
}

func (c *canvas) trackRect() rect {
	cr := c.clockRect()
	return xywh(cr.x0, cr.y1+barGap, cr.x1-cr.x0, barHeight)
}

func (c *canvas) barRect() rect {
	t := c.trackRect()
	return xywh(t.x0+c.barX, t.y0, barWidth, barHeight)
}

// glyphRect is the cell of the i-th character of text drawn at (x, y).
func glyphRect(x, y, scale, i int) rect {
	return xywh(x+i*(glyphW+1)*scale, y, glyphW*scale, glyphH*scale)
}

// fixed are the squares drawn above everything, with their colours.
func (c *canvas) fixed() [5]struct {
	r      rect
	colour uint32
} {
	ind := uint32(colourBlack)
	if c.keyDown {
		ind = colourYellow
	}
	s := cornerSize
	return [5]struct {
		r      rect
		colour uint32
	}{
		{xywh(0, 0, s, s), colourRed},
		{xywh(c.w-s, 0, s, s), colourGreen},
		{xywh(0, c.h-s, s, s), colourBlue},
		{xywh(c.w-s, c.h-s, s, s), colourWhite},
		{xywh(indicatorX, 0, s, s), ind},
	}
}

// paint redraws every layer inside r, bottom to top. The caller holds mu
// for writing (or is the constructor).
func (c *canvas) paint(r rect) {
	r = r.intersect(c.bounds())
	if r.empty() {
		return
	}
	c.fill(r, r, colourBackground)
	c.text(r, textX, textY, textScale, c.typed, colourText)
	c.text(r, c.clockRect().x0, c.clockRect().y0, clockScale, []byte(c.clock), colourClock)
	c.fill(r, c.barRect(), colourBar)
	for y := r.y0; y < r.y1; y++ {
		for x := r.x0; x < r.x1; x++ {
			i := y*c.w + x
			if c.dots[i/64]&(1<<(i%64)) != 0 {
				c.pix[i] = colourMagenta
			}
		}
	}
	for _, f := range c.fixed() {
		c.fill(r, f.r, f.colour)
	}
}

func (c *canvas) fill(clip, r rect, colour uint32) {
	r = r.intersect(clip)
	for y := r.y0; y < r.y1; y++ {
		row := c.pix[y*c.w+r.x0 : y*c.w+r.x1]
		for i := range row {
			row[i] = colour
		}
	}
}

func (c *canvas) text(clip rect, x, y, scale int, s []byte, colour uint32) {
	for i, ch := range s {
		cell := glyphRect(x, y, scale, i)
		if cell.intersect(clip).empty() {
			continue
		}
		g := glyph(ch)
		for gy, bits := range g {
			for gx := range glyphW {
				if bits&(1<<(glyphW-1-gx)) != 0 {
					c.fill(clip, xywh(cell.x0+gx*scale, cell.y0+gy*scale, scale, scale), colour)
				}
			}
		}
	}
}

// changed repaints r and tells every client about it. The caller holds mu
// for writing.
func (c *canvas) changed(r rect) {
	r = r.intersect(c.bounds())
	if r.empty() {
		return
	}
	c.paint(r)
	for s := range c.observers {
		s.damage(r)
	}
}

func (c *canvas) observe(s *session) {
	c.mu.Lock()
	c.observers[s] = struct{}{}
	c.mu.Unlock()
}

func (c *canvas) forget(s *session) {
	c.mu.Lock()
	delete(c.observers, s)
	c.mu.Unlock()
}

// key records a key press of an X11 keysym.
func (c *canvas) key(keysym uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.keyDown {
		c.keyDown = true
		c.changed(xywh(indicatorX, 0, cornerSize, cornerSize))
	}
	old := len(c.typed)
	switch {
	case keysym >= 0x20 && keysym <= 0x7e:
		if len(c.typed) == textMax {
			copy(c.typed, c.typed[1:])
			c.typed = c.typed[:textMax-1]
			old = textMax // every cell moved
		}
		c.typed = append(c.typed, byte(keysym))
	case keysym == 0xff08 && len(c.typed) > 0: // BackSpace
		c.typed = c.typed[:len(c.typed)-1]
	default:
		return
	}
	n := max(old, len(c.typed))
	c.changed(glyphRect(textX, textY, textScale, 0).union(glyphRect(textX, textY, textScale, n-1)))
}

// click draws a dot centred on (x, y).
func (c *canvas) click(x, y int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := rect{x - dotRadius, y - dotRadius, x + dotRadius + 1, y + dotRadius + 1}.intersect(c.bounds())
	for py := r.y0; py < r.y1; py++ {
		for px := r.x0; px < r.x1; px++ {
			i := py*c.w + px
			c.dots[i/64] |= 1 << (i % 64)
		}
	}
	c.changed(r)
}

// tick advances the animation: the bar moves every tick, the clock's
// changed digits are redrawn when the second changes.
func (c *canvas) tick(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := now.Format("15:04:05"); s != c.clock {
		cr := c.clockRect()
		var d rect
		for i := range min(len(s), len(c.clock)) {
			if s[i] != c.clock[i] {
				d = d.union(glyphRect(cr.x0, cr.y0, clockScale, i))
			}
		}
		c.clock = s
		c.changed(d)
	}
	span := c.trackRect().x1 - c.trackRect().x0 - barWidth
	if span <= 0 {
		return
	}
	old := c.barRect()
	c.barX += c.barDir * barStep
	if c.barX <= 0 || c.barX >= span {
		c.barX = min(max(c.barX, 0), span)
		c.barDir = -c.barDir
	}
	c.changed(old.union(c.barRect()))
}
