// Command vncdemo is a small VNC server that draws a fixed test picture, a
// clock and the input it receives: the demo target behind the proxy and a
// fixture for its end-to-end tests. See internal/vncdemo for the picture.
//
// Usage:
//
//	vncdemo [-listen 127.0.0.1:5900] [-unix /path/to/socket] [-geometry 800x600]
//	        [-name vncdemo] [-password-file F | -password P] [-verbose]
//
// The password may also come from the environment variable VNCDEMO_PASSWORD,
// which keeps it out of the process list. With a password the server asks
// for VNC Authentication, otherwise for nothing.
//
// Once every listener is open it prints "vncdemo listening on ADDR" for each
// (ADDR is host:port, or unix:/path for a socket) on standard output. It
// exits on SIGINT or SIGTERM after closing every client connection.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/vncgate/caddy-vnc-proxy/internal/vncdemo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "vncdemo:", err)
		}
		os.Exit(2)
	}
}

// run serves until ctx ends or a listener fails.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vncdemo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:5900", "TCP `address` to listen on, host:port or a port; empty for none")
	unixPath := fs.String("unix", "", "Unix socket `path` to listen on (instead of TCP unless -listen is also given)")
	geometry := fs.String("geometry", "800x600", "framebuffer size, `WxH`")
	name := fs.String("name", vncdemo.DefaultName, "desktop `name`")
	password := fs.String("password", "", "VNC password (visible to other users: prefer VNCDEMO_PASSWORD or -password-file)")
	passwordFile := fs.String("password-file", "", "read the VNC password from the first line of `file`")
	verbose := fs.Bool("verbose", false, "log every connection")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	w, h, err := parseGeometry(*geometry)
	if err != nil {
		return err
	}
	pw, err := choosePassword(*password, set["password"], *passwordFile, getenv("VNCDEMO_PASSWORD"))
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	srv := &vncdemo.Server{
		Width: w, Height: h, Name: *name, Password: pw,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	}

	tcpAddr := *listen
	if *unixPath != "" && !set["listen"] {
		tcpAddr = ""
	}
	if tcpAddr == "" && *unixPath == "" {
		return errors.New("nothing to listen on: give -listen or -unix")
	}
	var listeners []net.Listener
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	if tcpAddr != "" {
		if _, err := strconv.Atoi(tcpAddr); err == nil {
			tcpAddr = net.JoinHostPort("127.0.0.1", tcpAddr)
		}
		l, err := net.Listen("tcp", tcpAddr)
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
	}
	if *unixPath != "" {
		// A socket left behind by a killed server would block the address.
		if fi, err := os.Lstat(*unixPath); err == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(*unixPath)
		}
		l, err := net.Listen("unix", *unixPath)
		if err != nil {
			closeAll()
			return err
		}
		listeners = append(listeners, l)
	}

	served := make(chan error, len(listeners))
	for _, l := range listeners {
		go func() { served <- srv.Serve(l) }()
	}
	for _, l := range listeners {
		addr := l.Addr().String()
		if l.Addr().Network() == "unix" {
			addr = "unix:" + addr
		}
		fmt.Fprintf(stdout, "vncdemo listening on %s\n", addr)
	}

	// Run until a signal, or until a listener fails (Serve returns before
	// Close); either way close everything and wait for it.
	pending := len(listeners)
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
		pending--
		if serveErr == nil {
			serveErr = errors.New("listener closed")
		}
	}
	srv.Close()
	for range pending {
		<-served
	}
	return serveErr
}

func parseGeometry(s string) (w, h int, err error) {
	ws, hs, ok := strings.Cut(strings.ToLower(s), "x")
	if ok {
		w, err = strconv.Atoi(ws)
		if err == nil {
			h, err = strconv.Atoi(hs)
		}
	}
	if !ok || err != nil || w < 1 || h < 1 || w > vncdemo.MaxSize || h > vncdemo.MaxSize {
		return 0, 0, fmt.Errorf("bad -geometry %q: want WxH, each 1..%d", s, vncdemo.MaxSize)
	}
	return w, h, nil
}

// choosePassword takes the password from -password-file, -password or the
// environment, in that order; giving both flags is an error.
func choosePassword(flagValue string, flagSet bool, file, env string) (string, error) {
	switch {
	case flagSet && file != "":
		return "", errors.New("give -password or -password-file, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("reading password file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			return "", fmt.Errorf("password file %s is empty", file)
		}
		return line, nil
	case flagSet:
		return flagValue, nil
	}
	return env, nil
}
