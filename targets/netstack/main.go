// netstack target agent: executes socket calls on command (targets/PROTOCOL.md)
// on gVisor's userspace TCP/IP stack (gvisor.dev/gvisor/pkg/tcpip), not the
// kernel's.
//
// The stack is attached to the target's veth through an AF_PACKET socket
// (link/fdbased): frames the peer sends reach the stack, frames the stack
// sends leave on the veth, so the peer, the capture and every case see it as
// they see a kernel target. The agent needs no capability: the harness opens
// the packet socket (CAP_NET_RAW) and passes it as an inherited descriptor
// (--fd N). The stack's configuration (addresses, routes, static neighbours,
// a few sysctls) is mirrored from the target namespace's kernel tables, read
// through rtnetlink and /proc/sys (no capability needed), before every
// command: the harness configures the namespace as it does for a kernel
// target, and the kernel itself is kept deaf (see README.md).
//
// The socket calls are tcpip.Endpoint calls (no gonet): every endpoint call
// is non-blocking by nature (ErrWouldBlock, ErrConnectStarted); a blocking
// socket waits on the endpoint's waiter.Queue, as gVisor's own socket layer
// (the sentry) does. No test logic lives here.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
)

const maxLine = 4096 // bytes in a command line, its newline not counted

// protoErr: the command itself is wrong; reply `proto CODE`.
type protoErr struct{ code, msg string }

func (e *protoErr) Error() string { return e.msg }

func badarg(format string, a ...any) error { return &protoErr{"badarg", fmt.Sprintf(format, a...)} }

// unsupported: the stack's API cannot express the operation.
type unsupported struct{ msg string }

func (e *unsupported) Error() string { return e.msg }

// errnoErr: a failure with its symbolic errno name (from the tcpip.Error table
// in errors.go), `timeout` for an MS that expired, or `noerrno`.
type errnoErr struct{ name, msg string }

func (e *errnoErr) Error() string { return e.msg }

type field struct{ key, value string }

// number parses a decimal integer the way Python's int(text, 10) does
// (optional sign, single underscores between digits) within [low, high].
func number(text string, low, high int) (int, error) {
	digits := strings.TrimLeft(text, "+-")
	if len(text)-len(digits) > 1 || digits == "" || digits[0] == '_' || strings.HasSuffix(digits, "_") ||
		strings.Contains(digits, "__") || strings.Trim(digits, "0123456789_") != "" {
		return 0, badarg("not a number: %s", text)
	}
	v, err := strconv.ParseInt(text[:len(text)-len(digits)]+strings.ReplaceAll(digits, "_", ""), 10, 64)
	if err != nil || v < int64(low) || v > int64(high) {
		return 0, badarg("out of range: %s", text)
	}
	return int(v), nil
}

// timeout parses MS: ok is false for `none`.
func timeout(text string) (d time.Duration, ok bool, err error) {
	if text == "none" {
		return 0, false, nil
	}
	ms, err := number(text, 1, 1<<31-1)
	return time.Duration(ms) * time.Millisecond, true, err
}

// pct percent-encodes every byte outside A-Z a-z 0-9 - . _ ~ : /
func pct(text string) string {
	var b strings.Builder
	for i := 0; i < len(text); i++ {
		c := text[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-._~:/", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// isSpace matches Python's str.split() on ASCII.
func isSpace(r rune) bool {
	return r == ' ' || ('\t' <= r && r <= '\r') || (0x1c <= r && r <= 0x1f)
}

type op struct {
	nargs    int
	variadic bool
	fn       func(*agent, []string) ([]field, error)
}

var ops = map[string]op{
	"socket":      {2, false, (*agent).opSocket},
	"setsockopt":  {2, true, (*agent).opSetsockopt},
	"getsockopt":  {2, false, (*agent).opGetsockopt},
	"bind":        {3, false, (*agent).opBind},
	"listen":      {2, false, (*agent).opListen},
	"accept":      {2, false, (*agent).opAccept},
	"connect":     {4, false, (*agent).opConnect},
	"send":        {2, false, (*agent).opSend},
	"recv":        {3, false, (*agent).opRecv},
	"shutdown":    {2, false, (*agent).opShutdown},
	"close":       {1, false, (*agent).opClose},
	"getsockname": {1, false, (*agent).opGetsockname},
	"getpeername": {1, false, (*agent).opGetpeername},
	"quit":        {0, false, func(*agent, []string) ([]field, error) { return nil, nil }},
	// The optional introspection commands (README.md, "Protocol extension"):
	// the stack's own tables. Also served on --state-fd while a call blocks.
	"sockets":   {0, false, (*agent).opSockets},
	"counters":  {0, false, (*agent).opCounters},
	"neighbour": {1, false, (*agent).opNeighbour},
}

// introspection commands: they read the stack's tables and never touch a
// handle, so they may run while another command blocks (--state-fd).
var introspection = map[string]bool{"sockets": true, "counters": true, "neighbour": true}

func (a *agent) execute(line string, allowed func(string) bool) string {
	words := strings.FieldsFunc(line, isSpace)
	if len(words) == 0 {
		return "proto badline msg=" + pct("empty line")
	}
	o, ok := ops[words[0]]
	if !ok || !allowed(words[0]) {
		return "proto badop msg=" + pct("unknown command "+words[0])
	}
	args := words[1:]
	if len(args) < o.nargs || (len(args) > o.nargs && !o.variadic) {
		return "proto badline msg=" + pct(fmt.Sprintf("%s takes %d argument(s)", words[0], o.nargs))
	}
	var us int64
	fields, err := func() ([]field, error) {
		if introspection[words[0]] {
			a.net.settle(a.cfg.settle)
			start := time.Now()
			defer func() { us = time.Since(start).Microseconds() }()
			return o.fn(a, args)
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		a.us = 0
		a.mirror() // the namespace's configuration, as the harness left it (not timed)
		f, err := o.fn(a, args)
		us = a.us
		return f, err
	}()
	var pe *protoErr
	var ue *unsupported
	var ee *errnoErr
	switch {
	case err == nil:
	case asType(err, &pe):
		return "proto " + pe.code + " msg=" + pct(pe.msg)
	case asType(err, &ue):
		return fmt.Sprintf("unsupported %d msg=%s", us, pct(ue.msg))
	case asType(err, &ee):
		return fmt.Sprintf("err %s %d msg=%s", ee.name, us, pct(ee.msg))
	default:
		return fmt.Sprintf("err noerrno %d msg=%s", us, pct(err.Error()))
	}
	reply := "ok " + strconv.FormatInt(us, 10)
	for _, f := range fields {
		reply += " " + f.key + "=" + f.value
	}
	return reply
}

func asType[T error](err error, target *T) bool {
	t, ok := err.(T)
	if ok {
		*target = t
	}
	return ok
}

// readLine returns one line without its newline, and whether it was too
// long (more than maxLine bytes, the newline not counted); only the start of
// a too long line is kept, the rest is dropped.
func readLine(r *bufio.Reader) (line []byte, tooLong bool, err error) {
	for {
		chunk, err := r.ReadSlice('\n')
		if len(line) <= maxLine {
			line = append(line, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		if len(line) > maxLine {
			return line, true, nil
		}
		if err == io.EOF && len(line) > 0 {
			err = nil
		}
		return line, false, err
	}
}

// serve runs the line protocol on in/out until EOF (or `quit`, if quitOK).
func (a *agent) serve(in io.Reader, out io.Writer, allowed func(string) bool, quitOK bool) {
	w := bufio.NewWriter(out)
	reply := func(line string) {
		w.WriteString(line + "\n")
		w.Flush()
	}
	r := bufio.NewReaderSize(in, maxLine+1)
	for {
		line, tooLong, err := readLine(r)
		if err != nil {
			return
		}
		switch {
		case bytes.IndexFunc(line, func(r rune) bool { return r >= 0x80 }) >= 0:
			reply("proto badline msg=" + pct("not ASCII"))
		case tooLong:
			reply("proto badline msg=" + pct("line too long"))
		default:
			rep := a.execute(string(line), allowed)
			reply(rep)
			if quitOK && strings.HasPrefix(rep, "ok") && strings.FieldsFunc(string(line), isSpace)[0] == "quit" {
				return
			}
		}
	}
}

// version names the stack's module version and the Go toolchain.
func version() string {
	v := "gvisor.dev/gvisor (unknown version)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "gvisor.dev/gvisor" {
				v = d.Path + " " + d.Version
				if d.Replace != nil {
					v += " => " + d.Replace.Path + " " + d.Replace.Version
				}
			}
		}
		v += " " + bi.GoVersion
	}
	return v
}

func main() {
	var cfg config
	flag.StringVar(&cfg.nic, "nic", "", "the target's interface (the veth end in this namespace): MAC, MTU, addresses, routes and neighbours are read from it")
	flag.IntVar(&cfg.fd, "fd", -1, "an inherited AF_PACKET socket bound to --nic (the harness opens it); without it the agent opens one itself, which needs CAP_NET_RAW")
	flag.IntVar(&cfg.stateFD, "state-fd", -1, "an inherited socket on which the introspection commands (sockets, counters, neighbour) are also served, concurrently with the command channel")
	flag.BoolVar(&cfg.sentryBacklog, "sentry-backlog", false, "listen as gVisor's sentry does: backlog capped at 1024, plus one (Linux parity); default: Endpoint.Listen(backlog) as given")
	flag.DurationVar(&cfg.settle, "settle", time.Millisecond, "after the packet socket's queue is read, wait this long more before answering an introspection command (the stack's goroutines finish what they read)")
	flag.Parse()
	if flag.NArg() != 0 || cfg.nic == "" {
		fmt.Fprintln(os.Stderr, "usage: agent --nic IFNAME [--fd N] [--state-fd N] [--sentry-backlog]")
		os.Exit(2)
	}
	a, err := newAgent(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "netstack agent:", err)
		os.Exit(1)
	}
	fields := fmt.Sprintf("ready proto=1 lang=netstack version=%s pid=%d introspect=1", pct(version()), os.Getpid())
	if cfg.stateFD >= 0 {
		f := os.NewFile(uintptr(cfg.stateFD), "state")
		go a.serve(f, f, func(cmd string) bool { return introspection[cmd] }, false)
	}
	os.Stdout.WriteString(fields + "\n")
	a.serve(os.Stdin, os.Stdout, func(string) bool { return true }, true)
}

// agent: the stack, the handles, the mirror of the namespace's configuration.
type agent struct {
	mu    sync.Mutex // one command at a time on the command channel
	cfg   config
	net   *netstack
	socks map[int]*sock
	next  int
	us    int64 // elapsed time of the last op's socket calls
}
