package vncdemo

// rect is a half-open rectangle: x0 <= x < x1, y0 <= y < y1.
type rect struct{ x0, y0, x1, y1 int }

func xywh(x, y, w, h int) rect { return rect{x, y, x + w, y + h} }

func (r rect) empty() bool { return r.x0 >= r.x1 || r.y0 >= r.y1 }

func (r rect) intersect(o rect) rect {
	r = rect{max(r.x0, o.x0), max(r.y0, o.y0), min(r.x1, o.x1), min(r.y1, o.y1)}
	if r.empty() {
		return rect{}
	}
	return r
}

func (r rect) union(o rect) rect {
	switch {
	case r.empty():
		return o
	case o.empty():
		return r
	}
	return rect{min(r.x0, o.x0), min(r.y0, o.y0), max(r.x1, o.x1), max(r.y1, o.y1)}
}

// contains reports whether o lies inside r.
func (r rect) contains(o rect) bool {
	return o.x0 >= r.x0 && o.y0 >= r.y0 && o.x1 <= r.x1 && o.y1 <= r.y1
}

// subtract appends to dst the parts of r outside o (at most four).
func (r rect) subtract(dst []rect, o rect) []rect {
	i := r.intersect(o)
	if i.empty() {
		return append(dst, r)
	}
	for _, p := range [4]rect{
		{r.x0, r.y0, r.x1, i.y0}, // above
		{r.x0, i.y1, r.x1, r.y1}, // below
		{r.x0, i.y0, i.x0, i.y1}, // left
		{i.x1, i.y0, r.x1, i.y1}, // right
	} {
		if !p.empty() {
			dst = append(dst, p)
		}
	}
	return dst
}

// maxDirty bounds a client's list of changed rectangles; beyond it they
// collapse into their bounding box, so memory stays bounded however often
// the picture changes while a client does not ask for updates.
const maxDirty = 32

// region is a list of changed rectangles, possibly overlapping.
type region []rect

func (g region) add(r rect) region {
	if r.empty() {
		return g
	}
	for _, d := range g {
		if d.contains(r) {
			return g
		}
	}
	out := g[:0]
	for _, d := range g {
		if !r.contains(d) {
			out = append(out, d)
		}
	}
	out = append(out, r)
	if len(out) > maxDirty {
		var b rect
		for _, d := range out {
			b = b.union(d)
		}
		out = append(out[:0], b)
	}
	return out
}

// take removes from g what lies in req and returns it as rectangles to send.
func (g region) take(req rect, send []rect) (region, []rect) {
	var keep []rect
	for _, d := range g {
		i := d.intersect(req)
		if i.empty() {
			keep = append(keep, d)
			continue
		}
		send = append(send, i)
		keep = d.subtract(keep, req)
	}
	return region(keep).compact(), send
}

func (g region) compact() region {
	if len(g) <= maxDirty {
		return g
	}
	var b rect
	for _, d := range g {
		b = b.union(d)
	}
	return region{b}
}
