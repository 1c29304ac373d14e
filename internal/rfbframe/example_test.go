package rfbframe_test

import (
	"bytes"
	"fmt"

	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfbframe"
)

// A relay that keeps the server's clipboard from the browser: every read
// is framed, spans are forwarded or dropped whole, and what Next leaves (a
// header cut by the read) waits for the next read.
func ExampleFramer_Next() {
	// Two reads of a server: a Bell, clipboard text cut in its header, an
	// update of one Raw pixel.
	reads := [][]byte{
		{rfb.MsgBell, rfb.MsgServerCutText, 0, 0},
		{0, 0, 0, 0, 6, 's', 'e', 'c', 'r', 'e', 't',
			rfb.MsgFramebufferUpdate, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0xff, 0, 0, 0},
	}
	f, err := rfbframe.NewFramer(rfb.PixelFormat32)
	if err != nil {
		panic(err)
	}
	var browser bytes.Buffer
	buf := make([]byte, 0, 32<<10)
	dropped := 0
	for _, r := range reads {
		buf = append(buf, r...) // conn.Read(buf[len(buf):cap(buf)]) in a relay
		p := buf
		for len(p) > 0 {
			s, err := f.Next(p)
			if err != nil {
				panic(err) // a relay ends the console: close 1011
			}
			if s.Len == 0 {
				break
			}
			switch {
			case s.Kind == rfbframe.ServerCutText,
				s.Kind == rfbframe.ExtendedClipboard && s.Clipboard&rfb.ClipboardProvide != 0:
				if s.Start {
					dropped++
				}
			default:
				browser.Write(p[:s.Len])
			}
			p = p[s.Len:]
		}
		buf = buf[:copy(buf, p)]
	}
	fmt.Printf("forwarded %d bytes, dropped %d clipboard message\n", browser.Len(), dropped)
	// Output: forwarded 21 bytes, dropped 1 clipboard message
}
