// Package recording records VNC consoles: the RFB stream a browser
// receives, with millisecond timestamps, in the FBS 001.000 format
// (internal/fbs) that RFB players read, plus a JSON sidecar that says whose
// console it was and whether the recording is whole. It also keeps the
// recordings' directory within its age and size limits, lists recordings
// and opens one for serving.
//
// The relay calls Server with what it sends the browser, and Input with
// each message the browser sends (or Client with the browser's bytes as
// they come, when the relay does not frame them), on its own goroutines;
// they copy the bytes into a bounded queue and return at once, so a slow or full disk
// never slows a console. One writer goroutine per recording empties the
// queue. A full queue or a failed write is an error the caller acts on
// (end the console, or carry on unrecorded); either way the sidecar says
// the recording is incomplete.
//
// Files, in the configured directory (created 0700), each 0600:
//
//	<id>.fbs    the browser-facing stream: the proxy's own handshake with
//	            security None (Handshake), then the VNC server's messages
//	<id>.input  with IncludeInput: the browser's KeyEvent, PointerEvent and
//	            QEMU extended key event messages, one block each, same format
//	<id>.json   the sidecar (Sidecar), rewritten atomically when the
//	            recording ends
//
// The id is the start time and random hex; it never holds the token.
package recording

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vncgate/caddy-vnc-proxy/internal/fbs"
	"github.com/vncgate/caddy-vnc-proxy/internal/rfb"
)

// Defaults of Config, and the writer's pace.
const (
	// DefaultQueueBytes bounds the bytes a recording holds that are not
	// on disk yet: a few seconds of a busy console behind a stalled disk.
	DefaultQueueBytes = 8 << 20
	// DefaultQueueBlocks bounds the blocks (Server and Input calls) queued.
	DefaultQueueBlocks = 8192
	// ProxyQueueWait is the QueueWait the proxy records consoles with.
	ProxyQueueWait = time.Second
	// maxPixelFormats bounds the sidecar's list; a browser that changes
	// its pixel format more often is not a viewer.
	maxPixelFormats = 256
	// writeInterval spaces the writer's small batches: Server then rarely
	// has a goroutine to wake (the costly part of a channel send), and a
	// console that sends a little all the time costs at most a hundred
	// writes a second.
	writeInterval = 10 * time.Millisecond
	// sleepBelow is the batch size under which the writer waits
	// writeInterval before the next; after a larger one (a burst, a slow
	// disk) it goes straight on.
	sleepBelow = 256 << 10
)

var (
	// ErrQueueFull: the recording's queue was full; what did not fit is
	// lost and the recording is incomplete from there on.
	ErrQueueFull = errors.New("recording queue full")
	// ErrEnded: Server or Input after End.
	ErrEnded = errors.New("recording ended")
	// ErrTooManyPixelFormats: the browser changed its pixel format more
	// often than the sidecar lists; the stream is whole, but a player
	// cannot know its later formats.
	ErrTooManyPixelFormats = fmt.Errorf("more than %d pixel format changes", maxPixelFormats)
)

// Config is where and how a console is recorded.
type Config struct {
	// Dir holds the recordings; it is created 0700 if missing.
	Dir string
	// IncludeInput also records the browser's key and pointer events into
	// <id>.input.
	IncludeInput bool
	// QueueBytes and QueueBlocks bound what is queued and not yet written.
	// Default: DefaultQueueBytes, DefaultQueueBlocks.
	QueueBytes  int
	QueueBlocks int
	// QueueWait is how long a Server or Input call waits for room in a
	// full queue before the queue's being full is an error: a console
	// faster than the disk for a moment (a full-screen update) then goes
	// at the disk's pace, and a disk that stalls still fails the
	// recording within this bound. Default: 0 (a full queue is an error
	// at once).
	QueueWait time.Duration
	// OnError, if set, is called once with the error that made the
	// recording incomplete (a full queue, a failed write), from the
	// recording's writer goroutine, so it may end the console without
	// deadlocking the relay. The same error is returned by every later
	// Server and Input call and by Err.
	OnError func(error)
	// Retention, if set, is triggered when the recording has finished: a
	// *Retention, or anything that passes the word on to the retention
	// of the directory.
	Retention Trigger
}

// Trigger is told when a recording has finished; Retention is one.
type Trigger interface{ Trigger() }

// Meta is who and what a recording is of; it goes into the sidecar.
type Meta struct {
	// Session is the console's session id.
	Session string
	// TokenHash is the short hash of the token the logs carry; never the
	// token itself.
	TokenHash string
	// Target is the VNC server, as the logs name it.
	Target string
}

// Recording is one console being recorded. Server and Input may be called
// from any goroutine; End must be called once the console has ended, or
// the writer goroutine and the files stay open.
type Recording struct {
	cfg         Config
	id          string
	start       time.Time
	fbs         *os.File
	input       *os.File
	sidecarPath string
	liveKey     string

	mu     sync.Mutex
	server queue // FBS blocks queued for <id>.fbs
	inputQ queue // blocks queued for <id>.input
	queued int   // bytes queued or being written
	blocks int   // blocks queued or being written
	err    error // the first failure; the recording is incomplete
	ending bool
	side   Sidecar
	lastPF [16]byte
	pfLost bool
	// clientLost: Client could not frame the browser's stream.
	clientLost error
	client     clientFramer // Client's state; its goroutine only
	lastMs     uint32
	spare      [2]queue // emptied chunk lists handed back by the writer
	// room, while a call waits for room in the queue, is closed by the
	// writer when it has written a batch.
	room chan struct{}
	wake chan struct{}
	// hurry cuts the writer's writeInterval short once sleepBelow bytes
	// wait: a console faster than the interval's batches must not fill
	// the queue while the writer sleeps.
	hurry   chan struct{}
	done    chan struct{}
	waitErr error
}

// Start creates the recording's files and its sidecar (complete: false)
// and starts its writer. The caller then records the browser's handshake
// (Handshake) as the first Server bytes.
func Start(cfg Config, meta Meta) (*Recording, error) {
	if cfg.Dir == "" {
		return nil, errors.New("recording: no directory")
	}
	if cfg.QueueBytes <= 0 {
		cfg.QueueBytes = DefaultQueueBytes
	}
	if cfg.QueueBlocks <= 0 {
		cfg.QueueBlocks = DefaultQueueBlocks
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("recording directory: %w", err)
	}
	cfg.Dir = dir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating recording directory: %w", err)
	}
	now := time.Now()
	id, err := newID(now)
	if err != nil {
		return nil, err
	}
	r := &Recording{
		cfg:         cfg,
		id:          id,
		start:       now,
		sidecarPath: filepath.Join(dir, id+".json"),
		liveKey:     filepath.Join(dir, id),
		wake:        make(chan struct{}, 1),
		hurry:       make(chan struct{}, 1),
		done:        make(chan struct{}),
		side: Sidecar{
			ID:            id,
			Session:       meta.Session,
			TokenHash:     meta.TokenHash,
			Target:        meta.Target,
			Started:       now.UTC(),
			InputIncluded: cfg.IncludeInput,
			PixelFormats:  []PixelFormatChange{},
		},
	}
	r.server.pos, r.inputQ.pos = int64(len(fbs.Header)), int64(len(fbs.Header))
	// Registered before the first file exists, so retention never sees
	// the files of a live recording as deletable.
	markLive(r.liveKey)
	if err := r.create(); err != nil {
		r.closeFiles()
		for _, ext := range []string{".fbs", ".input", ".json"} {
			os.Remove(filepath.Join(dir, id+ext))
		}
		unmarkLive(r.liveKey)
		return nil, err
	}
	go r.run()
	return r, nil
}

func (r *Recording) create() error {
	var err error
	if r.fbs, err = createFile(filepath.Join(r.cfg.Dir, r.id+".fbs")); err != nil {
		return err
	}
	if r.cfg.IncludeInput {
		if r.input, err = createFile(filepath.Join(r.cfg.Dir, r.id+".input")); err != nil {
			return err
		}
	}
	return writeSidecar(r.sidecarPath, r.side, false)
}

func createFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating recording file: %w", err)
	}
	if _, err := f.WriteString(fbs.Header); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing recording file: %w", err)
	}
	return f, nil
}

// newID is the start time, to the second, and 96 random bits: names sort
// by age in a listing and cannot be guessed.
func newID(now time.Time) (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("recording id: %w", err)
	}
	return now.UTC().Format(idTimeLayout) + "-" + hex.EncodeToString(b[:]), nil
}

const idTimeLayout = "20060102T150405Z"

// ID is the recording's id, the stem of its file names.
func (r *Recording) ID() string { return r.id }

// Dir is the directory the recording's files are in.
func (r *Recording) Dir() string { return r.cfg.Dir }

// Started is when the recording started; block timestamps count from it.
func (r *Recording) Started() time.Time { return r.start }

// Err returns the error that made the recording incomplete, or nil.
func (r *Recording) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// ms is the timestamp of a block: taken when the bytes pass through the
// relay, not when they reach the disk, so a queue does not shift them.
func (r *Recording) ms() uint32 {
	d := time.Since(r.start).Milliseconds()
	return uint32(min(max(d, 0), 1<<32-1))
}

// Server queues bytes the browser receives (the handshake from Handshake,
// then the VNC server's messages as relayed). It copies p and never
// blocks on the disk. It returns ErrQueueFull, a write error that happened
// earlier, or ErrEnded; after the first error nothing more is recorded.
func (r *Recording) Server(p []byte) error {
	if len(p) == 0 {
		return r.Err()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.admit(len(p)); err != nil {
		return err
	}
	// Taken under the lock, so a file's timestamps never go backwards
	// whichever goroutines call.
	ms := r.ms()
	r.take(0, &r.server).appendBlock(p, ms)
	r.side.Bytes += int64(len(p))
	r.lastMs = ms
	r.signal()
	return nil
}

// Input takes one whole client-to-server message, as the relay frames
// them. A SetPixelFormat is noted in the sidecar (a player needs it to
// decode the stream); with IncludeInput, a KeyEvent, PointerEvent or QEMU
// extended key event is queued for <id>.input. Anything else is ignored.
// Errors are those of Server.
func (r *Recording) Input(msg []byte) error {
	if len(msg) == 0 {
		return r.Err()
	}
	switch {
	case msg[0] == rfb.MsgSetPixelFormat && len(msg) >= 20:
		return r.pixelFormat(msg[4:20])
	case !r.cfg.IncludeInput:
		return r.Err()
	case msg[0] == rfb.MsgKeyEvent, msg[0] == rfb.MsgPointerEvent,
		msg[0] == rfb.MsgQEMUClient && len(msg) >= 2 && msg[1] == rfb.QEMUExtendedKeyEvent:
	default:
		return r.Err()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.admit(len(msg)); err != nil {
		return err
	}
	r.take(1, &r.inputQ).appendBlock(msg, r.ms())
	r.side.InputBytes += int64(len(msg))
	r.signal()
	return nil
}

func (r *Recording) pixelFormat(wire []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	if r.ending {
		return ErrEnded
	}
	// noVNC sends its format once; a repeat changes nothing for a player.
	if len(r.side.PixelFormats) > 0 && bytes.Equal(r.lastPF[:], wire) {
		return nil
	}
	if len(r.side.PixelFormats) >= maxPixelFormats {
		r.pfLost = true
		return nil
	}
	copy(r.lastPF[:], wire)
	r.side.PixelFormats = append(r.side.PixelFormats, newPixelFormatChange(r.ms(), r.side.Bytes, wire))
	return nil
}

// admit checks that n more bytes of data fit. The caller holds mu.
func (r *Recording) admit(n int) error {
	if r.err != nil {
		return r.err
	}
	if r.ending {
		return ErrEnded
	}
	size := fbs.BlockSize(n)
	var deadline time.Time
	for r.queued+size > r.cfg.QueueBytes || r.blocks+1 > r.cfg.QueueBlocks {
		// A block bigger than the whole queue never fits.
		if r.cfg.QueueWait > 0 && r.blocks > 0 && size <= r.cfg.QueueBytes {
			if deadline.IsZero() {
				deadline = time.Now().Add(r.cfg.QueueWait)
			}
			if r.waitRoom(deadline) {
				if r.err != nil {
					return r.err
				}
				if r.ending {
					return ErrEnded
				}
				continue
			}
		}
		r.err = fmt.Errorf("%w: %d bytes in %d blocks not yet written", ErrQueueFull, r.queued, r.blocks)
		r.signal()
		return r.err
	}
	r.queued += size
	r.blocks++
	return nil
}

// take returns q, given the spare chunk list handed back by the writer
// when q has none, so that the list itself is not reallocated. The caller
// holds mu.
func (r *Recording) take(i int, q *queue) *queue {
	if q.chunks == nil && r.spare[i].chunks != nil {
		q.chunks, r.spare[i].chunks = r.spare[i].chunks[:0], nil
	}
	return q
}

// waitRoom waits, with mu let go meanwhile, until the writer has written a
// batch or deadline passes; false at the deadline. The caller holds mu.
func (r *Recording) waitRoom(deadline time.Time) bool {
	if r.room == nil {
		r.room = make(chan struct{})
	}
	room := r.room
	r.signal()
	r.mu.Unlock()
	t := time.NewTimer(time.Until(deadline))
	var ok bool
	select {
	case <-room:
		ok = true
	case <-t.C:
	}
	t.Stop()
	r.mu.Lock()
	return ok
}

// signal wakes the writer; the caller holds r.mu.
func (r *Recording) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
	if r.queued >= sleepBelow || r.room != nil || r.ending || r.err != nil {
		select {
		case r.hurry <- struct{}{}:
		default:
		}
	}
}

// End marks the console as ended for reason (the session's end reason) and
// lets the writer finish: everything queued is written and synced, the
// files are closed and the sidecar is rewritten, complete only if nothing
// was lost. End does not wait; Wait does.
func (r *Recording) End(reason string) {
	r.mu.Lock()
	if !r.ending {
		r.ending = true
		now := time.Now().UTC()
		r.side.Ended = &now
		r.side.Reason = reason
	}
	r.signal()
	r.mu.Unlock()
}

// Wait waits until the recording is finished after End and returns the
// error that made it incomplete, or nil when the sidecar says complete.
func (r *Recording) Wait() error {
	<-r.done
	return r.waitErr
}

// Close is End then Wait.
func (r *Recording) Close(reason string) error {
	r.End(reason)
	return r.Wait()
}

// run is the writer goroutine: it takes the queued chunks, writes them,
// returns them to the pool and hands the emptied list back.
func (r *Recording) run() {
	defer close(r.done)
	var (
		fbsOK, inputOK = int64(len(fbs.Header)), int64(len(fbs.Header))
		broken         bool // a write failed: nothing more goes to disk
		reported       bool
	)
	pause := time.NewTimer(writeInterval)
	pause.Stop()
	for {
		<-r.wake
		r.mu.Lock()
		server, input := r.server, r.inputQ
		r.server, r.inputQ = queue{pos: server.pos}, queue{pos: input.pos}
		queued, blocks := r.queued, r.blocks
		ending := r.ending
		r.mu.Unlock()

		if !broken {
			broken = r.write(r.fbs, server, &fbsOK) != nil || r.write(r.input, input, &inputOK) != nil
		}
		wrote := server.len() + input.len()
		server.release()
		input.release()
		r.mu.Lock()
		r.queued -= queued
		r.blocks -= blocks
		r.spare[0], r.spare[1] = server, input
		if r.room != nil {
			close(r.room)
			r.room = nil
		}
		failure := r.err
		r.mu.Unlock()
		if failure != nil && !reported {
			reported = true
			if r.cfg.OnError != nil {
				r.cfg.OnError(failure)
			}
		}
		if ending {
			r.finish(broken)
			return
		}
		// A small batch means a quiet console: wait for more, unless
		// the console turns busy meanwhile (hurry). A large one means a
		// busy console or a slow disk: go straight on.
		if wrote > 0 && wrote < sleepBelow {
			pause.Reset(writeInterval)
			select {
			case <-pause.C:
			case <-r.hurry:
				pause.Stop()
			}
		}
	}
}

// write appends a batch of whole blocks to f; after a failure it cuts f
// back to where the batch began, so the file stays a valid (shorter)
// recording.
func (r *Recording) write(f *os.File, batch queue, ok *int64) error {
	if f == nil {
		return nil
	}
	for _, c := range batch.chunks {
		if _, err := f.Write(*c); err != nil {
			_ = f.Truncate(*ok)
			r.fail(fmt.Errorf("writing recording: %w", err))
			return err
		}
	}
	*ok += int64(batch.len())
	return nil
}

func (r *Recording) fail(err error) {
	r.mu.Lock()
	if r.err == nil {
		r.err = err
	}
	r.mu.Unlock()
}

// finish syncs and closes the files and rewrites the sidecar. Complete
// means the console has ended, nothing was dropped and every byte is on
// disk.
func (r *Recording) finish(broken bool) {
	if !broken {
		for _, f := range []*os.File{r.fbs, r.input} {
			if f == nil {
				continue
			}
			if err := f.Sync(); err != nil {
				r.fail(fmt.Errorf("syncing recording: %w", err))
			}
		}
	}
	if err := r.closeFiles(); err != nil {
		r.fail(fmt.Errorf("closing recording %s: %w", r.id, err))
	}
	r.mu.Lock()
	side := r.side
	side.PixelFormats = append([]PixelFormatChange(nil), r.side.PixelFormats...)
	side.DurationMs = r.lastMs
	err := r.err
	if err == nil && r.pfLost {
		err = ErrTooManyPixelFormats
	}
	if err == nil && r.clientLost != nil {
		err = r.clientLost
	}
	r.mu.Unlock()
	if err != nil {
		side.Error = err.Error()
	}
	side.Complete = err == nil
	if werr := writeSidecar(r.sidecarPath, side, true); werr != nil && err == nil {
		err = werr
	}
	r.waitErr = err
	unmarkLive(r.liveKey)
	if r.cfg.Retention != nil {
		r.cfg.Retention.Trigger()
	}
}

func (r *Recording) closeFiles() error {
	var errs []error
	for _, f := range []*os.File{r.fbs, r.input} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}

// Handshake is the start of every recording: what the proxy sends a
// browser in RFB-aware mode, RFB 3.8 with security None and a successful
// SecurityResult, so that a player connects without credentials, followed
// by serverInit (the VNC server's ServerInit, which may instead come
// through Server as relayed). A browser that answered 3.3 or 3.7 got a
// shorter handshake, but the stream after ServerInit is the same, and a
// player speaks 3.8.
func Handshake(serverInit []byte) []byte {
	b := rfb.AppendVersion(make([]byte, 0, rfb.VersionLen+6+len(serverInit)), 3, 8)
	b = append(b, 1, rfb.SecurityNone)
	b = binary.BigEndian.AppendUint32(b, 0)
	return append(b, serverInit...)
}

// ServerInit is the wire form of a ServerInit message, for a caller that
// has its parts rather than its bytes.
func ServerInit(width, height int, pf rfb.PixelFormat, name string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(width))
	b = binary.BigEndian.AppendUint16(b, uint16(height))
	w := pf.Marshal()
	b = append(b, w[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(name)))
	return append(b, name...)
}
