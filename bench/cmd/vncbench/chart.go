package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"strings"
)

var (
	colBackground = color.RGBA{0xff, 0xff, 0xff, 0xff}
	colText       = color.RGBA{0x20, 0x20, 0x20, 0xff}
	colGrey       = color.RGBA{0x90, 0x90, 0x90, 0xff}
	colTarget     = color.RGBA{0xd0, 0x20, 0x20, 0xff}
	colMet        = color.RGBA{0x10, 0x80, 0x30, 0xff}
)

// canvas draws rectangles and text in the 5×7 font at an integer scale.
type canvas struct{ img *image.RGBA }

func (c canvas) rect(x0, y0, x1, y1 int, col color.Color) {
	draw.Draw(c.img, image.Rect(x0, y0, x1, y1), image.NewUniform(col), image.Point{}, draw.Src)
}

func textWidth(s string, scale int) int {
	return len([]rune(s)) * 6 * scale
}

func (c canvas) text(x, y int, s string, scale int, col color.Color) {
	for _, r := range s {
		if r == ' ' {
			x += 6 * scale
			continue
		}
		g, ok := glyphs[r]
		if !ok {
			g = glyphs['?']
		}
		for row := range 7 {
			for bit := range 5 {
				if g[row]&(0x10>>bit) != 0 {
					c.rect(x+bit*scale, y+row*scale, x+(bit+1)*scale, y+(row+1)*scale, col)
				}
			}
		}
		x += 6 * scale
	}
}

func (c canvas) centered(cx, y int, s string, scale int, col color.Color) {
	c.text(cx-textWidth(s, scale)/2, y, s, scale, col)
}

// dashed draws a horizontal dashed line.
func (c canvas) dashed(x0, x1, y int, col color.Color) {
	for x := x0; x < x1; x += 12 {
		c.rect(x, y-1, min(x+7, x1), y+1, col)
	}
}

// targetLine is where the project's target sits for a metric, in its unit.
func targetLine(rw row) (float64, bool) {
	v := func(k string) (float64, bool) {
		c := rw.Values[k]
		if c == nil {
			return 0, false
		}
		return c.Median, true
	}
	switch rw.Key {
	case mDown, mUp:
		d, ok1 := v(vDirect)
		w, ok2 := v(vWebsockify)
		if !ok1 && !ok2 {
			return 0, false
		}
		return math.Max(0.5*d, 3*w), true
	case mRTT50:
		d, ok := v(vDirect)
		return d + 25, ok
	case mIdle:
		return 16, true
	case mOpen:
		return 4000, true
	}
	return 0, false
}

// writeChart draws one panel per metric, a bar per variant, the target as a
// red dashed line.
func writeChart(path string, rep *report) error {
	const (
		cols   = 2
		panelW = 700
		panelH = 300
		scale  = 2
	)
	W := cols * panelW
	// The legend, wrapped to the width: an entry per column, then the
	// target's line.
	type entry struct {
		x, y int
		v    string
	}
	var legend []entry
	x, y := 20, 66
	for _, v := range append(append([]string(nil), rep.Variants...), "") {
		w := 28 + textWidth(variantLabel[v], scale) + 30
		if v == "" {
			w = 48 + textWidth("target", scale)
		}
		if x+w > W-20 && x > 20 {
			x, y = 20, y+28
		}
		legend = append(legend, entry{x, y, v})
		x += w
	}
	top := y + 44
	cells := len(rep.Rows) + 1 // and the targets
	rowsN := (cells + cols - 1) / cols
	H := top + rowsN*panelH + 20
	c := canvas{image.NewRGBA(image.Rect(0, 0, W, H))}
	c.rect(0, 0, W, H, colBackground)

	c.text(20, 16, "caddy-vnc-proxy: vnc_proxy vs direct TCP vs websockify (loopback, medians)", scale, colText)
	m := rep.Machine
	c.text(20, 44, fmt.Sprintf("%d x %s, Linux %s, %s - %s", m.CPUs, m.CPUModel, m.Kernel, m.GoVersion, rep.Generated), 1, colGrey)
	for _, e := range legend {
		if e.v == "" {
			c.dashed(e.x, e.x+40, e.y+10, colTarget)
			c.text(e.x+48, e.y+3, "target", scale, colTarget)
			continue
		}
		c.rect(e.x, e.y, e.x+20, e.y+20, variantColor[e.v])
		c.text(e.x+28, e.y+3, variantLabel[e.v], scale, colText)
	}

	for i, rw := range rep.Rows {
		px, py := (i%cols)*panelW, top+(i/cols)*panelH
		drawPanel(c, px, py, panelW, panelH, rw, rep.Variants)
	}
	n := len(rep.Rows)
	drawTargets(c, (n%cols)*panelW, top+(n/cols)*panelH, rep)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, c.img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func drawPanel(c canvas, px, py, w, h int, rw row, variants []string) {
	const scale = 2
	better := "lower is better"
	if rw.HigherBetter {
		better = "higher is better"
	}
	c.text(px+20, py+10, rw.Title, scale, colText)
	c.text(px+20, py+32, rw.Unit+", "+better, 1, colGrey)
	if s := rw.met(); s != "" {
		col := colTarget
		if s == "met" {
			col = colMet
		}
		c.text(px+w-20-textWidth(s, scale), py+10, s, scale, col)
	}

	plotTop, plotBottom := py+70, py+h-40
	lo, hi := math.Inf(1), 0.0
	for _, v := range variants {
		if cl := rw.Values[v]; cl != nil && cl.Median > 0 {
			lo, hi = math.Min(lo, cl.Median), math.Max(hi, cl.Median)
		}
	}
	tv, hasTarget := targetLine(rw)
	if hasTarget && tv > 0 {
		lo, hi = math.Min(lo, tv), math.Max(hi, tv)
	}
	if hi <= 0 {
		hi, lo = 1, 1
	}
	// Values that span more than two decades (websockify's memory per
	// session against ours) get a log scale, or the small bars vanish.
	logScale := hi/lo > 100
	yOf := func(v float64) int {
		frac := v / hi
		if logScale {
			floor := math.Log10(lo) - 0.5
			frac = (math.Log10(math.Max(v, lo/3)) - floor) / (math.Log10(hi) - floor)
		}
		return plotBottom - int(float64(plotBottom-plotTop)*frac)
	}
	if logScale {
		c.text(px+w-20-textWidth("log scale", 1), py+32, "log scale", 1, colGrey)
	}
	slot := (w - 60) / max(len(variants), 1)
	barW := slot * 3 / 5
	// Labels and values in the small font when the bars are narrow.
	small := scale
	for _, v := range variants {
		if textWidth(variantShort[v], scale) > slot-4 {
			small = 1
		}
	}
	for j, v := range variants {
		cx := px + 30 + j*slot + slot/2
		c.centered(cx, plotBottom+10, variantShort[v], small, colText)
		cl := rw.Values[v]
		if cl == nil {
			c.centered(cx, plotBottom-20, "n/a", small, colGrey)
			continue
		}
		y := yOf(cl.Median)
		c.rect(cx-barW/2, y, cx+barW/2, plotBottom, variantColor[v])
		c.centered(cx, y-10-7*small, fmtNum(cl.Median), small, colText)
	}
	c.rect(px+20, plotBottom, px+w-20, plotBottom+2, colText)
	if hasTarget {
		c.dashed(px+20, px+w-20, yOf(tv), colTarget)
	}
}

// drawTargets lists the project's targets for vnc_proxy and whether each is
// met, in the panel grid's spare cell.
func drawTargets(c canvas, px, py int, rep *report) {
	const scale = 2
	c.text(px+20, py+10, "targets for vnc_proxy (ws)", scale, colText)
	y := py + 50
	for _, rw := range rep.Rows {
		if rw.Target == "" {
			continue
		}
		s := rw.met()
		col := colTarget
		if s == "met" {
			col = colMet
		}
		if strings.HasPrefix(s, "NOT met") {
			s = "NOT met"
		}
		c.text(px+20, y, s, scale, col)
		c.text(px+20+textWidth("NOT met ", scale), y, rw.Title, scale, colText)
		target := rw.Target
		if rw.Miss != "" {
			target += " - missed: " + rw.Miss
		}
		c.text(px+20+textWidth("NOT met ", scale), y+18, target, 1, colGrey)
		y += 40
	}
}
