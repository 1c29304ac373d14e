package recording_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/recording"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// How a relay records a console: the proxy's handshake first, then every
// chunk it forwards to the browser and every message the browser sends;
// an error is the on_error policy's to handle; End when the console ends.
func Example() {
	dir, err := os.MkdirTemp("", "recordings")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	retention := recording.NewRetention(dir, 30*24*time.Hour, 10<<30)
	retention.Start()
	defer retention.Stop()

	failed := make(chan error, 1)
	rec, err := recording.Start(recording.Config{
		Dir:       dir,
		Retention: retention,
		// on_error end: close the console with 1011 "recording failed".
		OnError: func(err error) { failed <- err },
	}, recording.Meta{Session: "a1b2", TokenHash: "5f3c9e01", Target: "tcp:10.0.0.5:5901"})
	if err != nil {
		log.Fatal(err) // on_error end: refuse the console
	}

	serverInit := recording.ServerInit(800, 600, rfb.PixelFormat32, "vm-1")
	browser := [][]byte{
		recording.Handshake(serverInit),
		{rfb.MsgFramebufferUpdate, 0, 0, 0}, // what the relay forwards, chunk by chunk
	}
	for _, chunk := range browser {
		if err := rec.Server(chunk); errors.Is(err, recording.ErrQueueFull) {
			log.Print("recording failed: ", err) // on_error decides
		}
	}
	setPixelFormat := append([]byte{rfb.MsgSetPixelFormat, 0, 0, 0}, make([]byte, 16)...)
	_ = rec.Input(setPixelFormat) // every framed client message

	err = rec.Close("client closed")
	side, _ := recording.ReadSidecar(dir, rec.ID())
	fmt.Println(err, side.Complete, side.Reason, side.Bytes, len(side.PixelFormats))
	select {
	case err := <-failed:
		fmt.Println("failed:", err)
	default:
	}
	// Output: <nil> true client closed 50 1
}
