// Go target agent: executes socket calls on command, see targets/PROTOCOL.md.
//
// It uses the net package the way a Go program would and reports what it
// returned. No test logic lives here.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const maxLine = 4096 // bytes in a command line, its newline not counted

// protoErr: the command itself is wrong; reply `proto CODE`.
type protoErr struct{ code, msg string }

func (e *protoErr) Error() string { return e.msg }

func badarg(format string, a ...any) error { return &protoErr{"badarg", fmt.Sprintf(format, a...)} }

// unsupported: Go's socket API cannot express the operation.
type unsupported struct{ msg string }

func (e *unsupported) Error() string { return e.msg }

type field struct{ key, value string }

type option struct {
	name string
	vals []int
}

// sock is one handle. Go creates the OS socket only when it binds (UDP),
// listens or connects; until then only the record exists.
type sock struct {
	kind, family string   // "tcp"|"udp", "inet"|"inet6"
	bind         string   // pending bind address "host:port" (TCP)
	opts         []option // options set before the socket exists
	ln           *net.TCPListener
	conn         net.Conn // *net.TCPConn or *net.UDPConn
}

func (s *sock) network() string {
	if s.family == "inet6" {
		return s.kind + "6"
	}
	return s.kind + "4"
}

func (s *sock) exists() bool { return s.ln != nil || s.conn != nil }

func (s *sock) raw() (syscall.RawConn, error) {
	if s.ln != nil {
		return s.ln.SyscallConn()
	}
	return s.conn.(syscall.Conn).SyscallConn()
}

// control applies the pending options in ListenConfig.Control / Dialer.Control.
func (s *sock) control(network, address string, c syscall.RawConn) error {
	var err error
	cerr := c.Control(func(fd uintptr) {
		for _, o := range s.opts {
			if err = setopt(int(fd), o); err != nil {
				return
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return err
}

func setopt(fd int, o option) error {
	var err error
	switch o.name {
	case "reuseaddr":
		err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, o.vals[0])
	case "linger":
		err = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER,
			&unix.Linger{Onoff: int32(o.vals[0]), Linger: int32(o.vals[1])})
	case "syncnt":
		err = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_SYNCNT, o.vals[0])
	case "user_timeout":
		err = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, o.vals[0])
	}
	return os.NewSyscallError("setsockopt", err)
}

func getopt(fd int, name string) (string, error) {
	var v int
	var err error
	switch name {
	case "reuseaddr":
		v, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR)
	case "linger":
		var l *unix.Linger
		if l, err = unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER); err == nil {
			return fmt.Sprintf("%d,%d", l.Onoff, l.Linger), nil
		}
	case "syncnt":
		v, err = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_SYNCNT)
	case "user_timeout":
		v, err = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}
	return strconv.Itoa(v), os.NewSyscallError("getsockopt", err)
}

type agent struct {
	socks map[int]*sock
	next  int
	us    int64 // elapsed time of the last op's socket calls
}

// timed runs the socket call(s) of an op and records their elapsed time.
func (a *agent) timed(f func() error) error {
	start := time.Now()
	err := f()
	a.us = time.Since(start).Microseconds()
	return err
}

func (a *agent) handle(text string) (*sock, error) {
	h, err := number(text, 0, 1<<31-1)
	if err != nil {
		return nil, err
	}
	s, ok := a.socks[h]
	if !ok {
		return nil, &protoErr{"badhandle", "no handle " + text}
	}
	return s, nil
}

func (a *agent) add(s *sock) []field {
	a.next++
	a.socks[a.next] = s
	return []field{{"h", strconv.Itoa(a.next)}}
}

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

func deadline(text string) (time.Time, error) {
	d, ok, err := timeout(text)
	if !ok || err != nil {
		return time.Time{}, err
	}
	return time.Now().Add(d), nil
}

// hostport checks PORT, then ADDR against the handle's family.
func hostport(s *sock, addr, port string) (string, error) {
	p, err := number(port, 0, 65535)
	if err != nil {
		return "", err
	}
	ip, perr := netip.ParseAddr(addr)
	if perr != nil || ip.Zone() != "" || (s.family == "inet") != ip.Is4() {
		return "", badarg("bad address %s", addr)
	}
	return netip.AddrPortFrom(ip, uint16(p)).String(), nil
}

func addrFields(addr net.Addr) []field {
	var ip net.IP
	var port int
	switch v := addr.(type) {
	case *net.TCPAddr:
		ip, port = v.IP, v.Port
	case *net.UDPAddr:
		ip, port = v.IP, v.Port
	}
	return []field{{"addr", ip.String()}, {"port", strconv.Itoa(port)}}
}

func notYet(s *sock) error {
	by := "listen or connect"
	if s.kind == "udp" {
		by = "bind or connect"
	}
	return &unsupported{"the socket does not exist yet in Go (it is created by " + by + ")"}
}

var optArgs = map[string]int{"reuseaddr": 1, "linger": 2, "syncnt": 1, "user_timeout": 1, "nonblock": 1}

func (a *agent) opSocket(args []string) ([]field, error) {
	kind, family := args[0], args[1]
	if family != "inet" && family != "inet6" {
		return nil, badarg("unknown keyword %s", family)
	}
	if kind != "tcp" && kind != "udp" {
		return nil, badarg("unknown keyword %s", kind)
	}
	return a.add(&sock{kind: kind, family: family}), nil
}

func (a *agent) opSetsockopt(args []string) ([]field, error) {
	s, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	name, values := args[1], args[2:]
	want, ok := optArgs[name]
	if !ok {
		return nil, badarg("unknown option %s", name)
	}
	if len(values) != want {
		return nil, &protoErr{"badline", fmt.Sprintf("%s takes %d value(s)", name, want)}
	}
	o := option{name: name}
	for _, v := range values {
		n, err := number(v, 0, 1<<31-1)
		if err != nil {
			return nil, err
		}
		o.vals = append(o.vals, n)
	}
	switch {
	case name == "nonblock":
		return nil, &unsupported{"Go has no non-blocking sockets, only deadlines"}
	case !s.exists():
		for i := range s.opts {
			if s.opts[i].name == name {
				s.opts[i] = o
				return nil, nil
			}
		}
		s.opts = append(s.opts, o)
		return nil, nil
	}
	if tc, ok := s.conn.(*net.TCPConn); ok && name == "linger" {
		sec := o.vals[1]
		if o.vals[0] == 0 {
			sec = -1 // SetLinger: negative means off
		}
		return nil, a.timed(func() error { return tc.SetLinger(sec) })
	}
	rc, err := s.raw()
	if err != nil {
		return nil, err
	}
	return nil, a.timed(func() error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = setopt(int(fd), o) }); err != nil {
			return err
		}
		return serr
	})
}

func (a *agent) opGetsockopt(args []string) ([]field, error) {
	s, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	name := args[1]
	if _, ok := optArgs[name]; !ok {
		return nil, badarg("unknown option %s", name)
	}
	if name == "nonblock" {
		return nil, &unsupported{"Go has no non-blocking sockets, only deadlines"}
	}
	if !s.exists() {
		for _, o := range s.opts {
			if o.name == name {
				vals := make([]string, len(o.vals))
				for i, v := range o.vals {
					vals[i] = strconv.Itoa(v)
				}
				return []field{{"value", strings.Join(vals, ",")}}, nil
			}
		}
		return nil, notYet(s)
	}
	rc, err := s.raw()
	if err != nil {
		return nil, err
	}
	var value string
	err = a.timed(func() error {
		var gerr error
		if err := rc.Control(func(fd uintptr) { value, gerr = getopt(int(fd), name) }); err != nil {
			return err
		}
		return gerr
	})
	if err != nil {
		return nil, err
	}
	return []field{{"value", value}}, nil
}

func (a *agent) opBind(args []string) ([]field, error) {
	s, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	address, err := hostport(s, args[1], args[2])
	if err != nil {
		return nil, err
	}
	if s.exists() {
		return nil, &unsupported{"Go binds only when it creates the socket"}
	}
	if s.kind == "tcp" {
		s.bind = address
		return []field{{"deferred", "1"}}, nil
	}
	// UDP: net.ListenUDP, through ListenConfig so pending options apply in Control.
	lc := net.ListenConfig{Control: s.control}
	return nil, a.timed(func() error {
		pc, err := lc.ListenPacket(context.Background(), s.network(), address)
		if err == nil {
			s.conn = pc.(*net.UDPConn)
		}
		return err
	})
}

func (a *agent) opListen(args []string) ([]field, error) {
	s, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	backlog := -1
	if args[1] != "default" {
		if backlog, err = number(args[1], 0, 1<<31-1); err != nil {
			return nil, err
		}
	}
	if s.kind == "udp" {
		return nil, &unsupported{"Go has no listen for UDP"}
	}
	if s.exists() {
		return nil, &unsupported{"Go listens only on a socket it creates"}
	}
	address := s.bind
	if address == "" {
		address = ":0"
	}
	lc := net.ListenConfig{Control: s.control}
	return nil, a.timed(func() error {
		ln, err := lc.Listen(context.Background(), s.network(), address)
		if err != nil {
			return err
		}
		if backlog >= 0 { // Go has no backlog parameter: listen(2) again.
			rc, err := ln.(*net.TCPListener).SyscallConn()
			var lerr error
			if err == nil {
				err = rc.Control(func(fd uintptr) { lerr = unix.Listen(int(fd), backlog) })
			}
			if err == nil {
				err = os.NewSyscallError("listen", lerr)
			}
			if err != nil {
				ln.Close()
				return err
			}
		}
		s.ln = ln.(*net.TCPListener)
		return nil
	})
}

func (a *agent) opAccept(args []string) ([]field, error) {
	s, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	dl, err := deadline(args[1])
	if err != nil {
		return nil, err
	}
	if s.ln == nil {
		if !s.exists() && s.kind == "tcp" {
			return nil, notYet(s)
		}
		return nil, &unsupported{"Go has Accept only on a Listener"}
	}
	var c *net.TCPConn
	err = a.timed(func() error {
		if err := s.ln.SetDeadline(dl); err != nil {
			return err
		}
		c, err = s.ln.AcceptTCP()
		return err
	})
	if err != nil {
		return nil, err
	}
	return append(a.add(&sock{kind: "tcp", family: s.family, conn: c}), addrFields(c.RemoteAddr())...), nil
}

func (a *agent) opConnect(args []string) ([]field, error) {
	s, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	address, err := hostport(s, args[1], args[2])
	if err != nil {
		return nil, err
	}
	d, hasTimeout, err := timeout(args[3])
	if err != nil {
		return nil, err
	}
	if s.exists() {
		return nil, &unsupported{"Go connects only a socket it creates"}
	}
	dialer := net.Dialer{Control: s.control}
	if s.bind != "" {
		dialer.LocalAddr, _ = net.ResolveTCPAddr(s.network(), s.bind)
	}
	ctx := context.Background()
	if hasTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	return nil, a.timed(func() error {
		c, err := dialer.DialContext(ctx, s.network(), address)
		if err == nil {
			s.conn = c
		}
		return err
	})
}

func (a *agent) conn(s *sock) (net.Conn, error) {
	if s.conn != nil {
		return s.conn, nil
	}
	if s.ln != nil {
		return nil, &unsupported{"a Go Listener has no Read, Write, CloseRead, CloseWrite or RemoteAddr"}
	}
	return nil, notYet(s)
}

func (a *agent) opSend(args []string) ([]field, error) {
	s, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	data := []byte{}
	if args[1] != "-" {
		if data, err = hex.DecodeString(args[1]); err != nil {
			return nil, badarg("bad hex")
		}
	}
	c, err := a.conn(s)
	if err != nil {
		return nil, err
	}
	var n int
	err = a.timed(func() error {
		n, err = c.Write(data)
		return err
	})
	if err != nil {
		return nil, err
	}
	return []field{{"n", strconv.Itoa(n)}}, nil
}

func (a *agent) opRecv(args []string) ([]field, error) {
	s, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	size, err := number(args[1], 1, 1<<20)
	if err != nil {
		return nil, err
	}
	dl, err := deadline(args[2])
	if err != nil {
		return nil, err
	}
	c, err := a.conn(s)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	var n int
	var from *net.UDPAddr
	err = a.timed(func() error {
		if err := c.SetReadDeadline(dl); err != nil {
			return err
		}
		if uc, ok := c.(*net.UDPConn); ok {
			n, from, err = uc.ReadFromUDP(buf)
		} else {
			n, err = c.Read(buf)
		}
		return err
	})
	if err != nil && err != io.EOF {
		return nil, err
	}
	data := hex.EncodeToString(buf[:n])
	if data == "" {
		data = "-"
	}
	reply := []field{{"n", strconv.Itoa(n)}, {"data", data}}
	if from != nil {
		reply = append(reply, addrFields(from)...)
	}
	return reply, nil
}

func (a *agent) opShutdown(args []string) ([]field, error) {
	s, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	how := args[1]
	if how != "rd" && how != "wr" && how != "rdwr" {
		return nil, badarg("unknown keyword %s", how)
	}
	c, err := a.conn(s)
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil, &unsupported{"a Go UDPConn has no CloseRead or CloseWrite"}
	}
	return nil, a.timed(func() error {
		if how != "wr" {
			if err := tc.CloseRead(); err != nil {
				return err
			}
		}
		if how != "rd" {
			return tc.CloseWrite()
		}
		return nil
	})
}

func (a *agent) opClose(args []string) ([]field, error) {
	s, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	h, _ := number(args[0], 0, 1<<31-1)
	delete(a.socks, h)
	return nil, a.timed(func() error {
		if s.ln != nil {
			return s.ln.Close()
		}
		if s.conn != nil {
			return s.conn.Close()
		}
		return nil
	})
}

func (a *agent) opGetsockname(args []string) ([]field, error) {
	s, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	if !s.exists() {
		return nil, notYet(s)
	}
	// Go records the addresses when it creates the socket: no system call here.
	if s.ln != nil {
		return addrFields(s.ln.Addr()), nil
	}
	return addrFields(s.conn.LocalAddr()), nil
}

func (a *agent) opGetpeername(args []string) ([]field, error) {
	s, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	c, err := a.conn(s)
	if err != nil {
		return nil, err
	}
	addr := c.RemoteAddr()
	if addr == nil { // an unconnected UDPConn: Go gives no error, only nil
		return nil, errors.New("RemoteAddr returned nil: not connected")
	}
	return addrFields(addr), nil
}

func (a *agent) opQuit(args []string) ([]field, error) { return nil, nil }

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
	"quit":        {0, false, (*agent).opQuit},
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

// errName unwraps to the errno and gives its symbolic name.
func errName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) && errno != 0 {
		if name := unix.ErrnoName(errno); name != "" {
			return name
		}
		return "noerrno"
	}
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return "noerrno"
}

// isSpace matches Python's str.split() on ASCII.
func isSpace(r rune) bool {
	return r == ' ' || ('\t' <= r && r <= '\r') || (0x1c <= r && r <= 0x1f)
}

func (a *agent) execute(line string) string {
	words := strings.FieldsFunc(line, isSpace)
	if len(words) == 0 {
		return "proto badline msg=" + pct("empty line")
	}
	o, ok := ops[words[0]]
	if !ok {
		return "proto badop msg=" + pct("unknown command "+words[0])
	}
	args := words[1:]
	if len(args) < o.nargs || (len(args) > o.nargs && !o.variadic) {
		return "proto badline msg=" + pct(fmt.Sprintf("%s takes %d argument(s)", words[0], o.nargs))
	}
	a.us = 0
	fields, err := o.fn(a, args)
	var pe *protoErr
	var ue *unsupported
	switch {
	case errors.As(err, &pe):
		return "proto " + pe.code + " msg=" + pct(pe.msg)
	case errors.As(err, &ue):
		return fmt.Sprintf("unsupported %d msg=%s", a.us, pct(ue.msg))
	case err != nil:
		return fmt.Sprintf("err %s %d msg=%s", errName(err), a.us, pct(err.Error()))
	}
	reply := "ok " + strconv.FormatInt(a.us, 10)
	for _, f := range fields {
		reply += " " + f.key + "=" + f.value
	}
	return reply
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

func main() {
	out := bufio.NewWriter(os.Stdout)
	reply := func(line string) {
		out.WriteString(line + "\n")
		out.Flush()
	}
	reply(fmt.Sprintf("ready proto=1 lang=go version=%s pid=%d", pct(runtime.Version()), os.Getpid()))
	a := &agent{socks: map[int]*sock{}}
	in := bufio.NewReaderSize(os.Stdin, maxLine+1)
	for {
		line, tooLong, err := readLine(in)
		if err != nil {
			return
		}
		switch {
		case strings.IndexFunc(string(line), func(r rune) bool { return r >= 0x80 }) >= 0:
			reply("proto badline msg=" + pct("not ASCII"))
		case tooLong:
			reply("proto badline msg=" + pct("line too long"))
		default:
			r := a.execute(string(line))
			reply(r)
			if strings.HasPrefix(r, "ok") && strings.FieldsFunc(string(line), isSpace)[0] == "quit" {
				return
			}
		}
	}
}
