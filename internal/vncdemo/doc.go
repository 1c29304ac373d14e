// Package vncdemo is a small but real RFB (VNC) server: the demo target of
// the proxy and a fixture for its tests. cmd/vncdemo runs it as a program;
// tests run a Server in-process.
//
// It speaks RFB 3.8 and answers 3.3 and 3.7 clients, with security type None
// or, when a password is set, VNC Authentication. It sends Raw rectangles
// only, in the client's pixel format (true colour at 8, 16 or 32 bits per
// pixel, any shifts, either byte order; 32 bpp depth 24 little-endian, red
// shift 16, until the client sets another). All clients share one
// framebuffer; each gets only the rectangles that changed since its last
// update when it asks incrementally.
//
// # The picture
//
// Tests check these exact pixels; they are a contract. Colours are (R,G,B),
// coordinates are inclusive, W and H are the geometry (default 800x600):
//
//   - Background: dark gray (32,32,32).
//   - Four 32x32 corner squares, never covered by anything: top-left
//     (0..31, 0..31) red (255,0,0); top-right (W-32..W-1, 0..31) green
//     (0,255,0); bottom-left (0..31, H-32..H-1) blue (0,0,255); bottom-right
//     (W-32..W-1, H-32..H-1) white (255,255,255).
//   - Key indicator: the square x=48..79, y=0..31 is black (0,0,0) until the
//     first key press of any client, then yellow (255,255,0) until the server
//     stops.
//   - Typed text: the last 16 printable characters typed (BackSpace deletes)
//     in light gray (220,220,220), 10x14-pixel capitals starting at x=96,
//     y=9.
//   - Pointer: every button press (a pointer event whose button mask is
//     non-zero after a zero mask from the same client) draws a 9x9 magenta
//     (255,0,255) square centred on the pointer, x-4..x+4, y-4..y+4. Dots
//     stay until the server stops and are drawn above everything except the
//     corner squares and the key indicator.
//   - Clock: the local time as HH:MM:SS in teal (0,200,200) digits 40x56
//     pixels each, centred on the screen, redrawn every second (only the
//     digits that changed).
//   - Animation: an orange (255,128,0) 48x8 bar that moves back and forth
//     on a track 24 pixels below the clock, 8 pixels every 100ms.
//
// # Limits
//
// Memory per client is bounded by the geometry whatever it sends:
// SetEncodings lists are skipped, ClientCutText up to 1 MiB is read and
// dropped and a longer one ends the connection, as do unknown message types
// and colour-map pixel formats.
package vncdemo
