package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// gonet's listen backlog (gonet.ListenTCP: maxListenBacklog), which follows
// Go's net package (net.core.somaxconn's default): `listen H default`.
const defaultBacklog = 4096

// gVisor's sentry caps listen(2)'s backlog here, then adds one (--sentry-backlog).
const sentryMaxBacklog = 1024

// sock is one handle: a tcpip endpoint and its waiter queue.
type sock struct {
	kind, family string // "tcp"|"udp", "inet"|"inet6"
	ep           tcpip.Endpoint
	wq           *waiter.Queue
	nonblock     bool
}

// timed runs the stack call(s) of an op and records their elapsed time.
func (a *agent) timed(f func() error) error {
	start := time.Now()
	err := f()
	a.us = time.Since(start).Microseconds()
	return err
}

func (a *agent) handle(text string) (*sock, int, error) {
	h, err := number(text, 0, 1<<31-1)
	if err != nil {
		return nil, 0, err
	}
	stateMu.Lock()
	s, ok := a.socks[h]
	stateMu.Unlock()
	if !ok {
		return nil, 0, &protoErr{"badhandle", "no handle " + text}
	}
	return s, h, nil
}

func (a *agent) add(s *sock) []field {
	stateMu.Lock()
	a.next++
	a.socks[a.next] = s
	stateMu.Unlock()
	return []field{{"h", strconv.Itoa(a.next)}}
}

// fullAddress checks PORT, then ADDR against the handle's family. The
// unspecified address is the stack's empty address (bind to any).
func fullAddress(s *sock, addr, port string) (tcpip.FullAddress, error) {
	p, err := number(port, 0, 65535)
	if err != nil {
		return tcpip.FullAddress{}, err
	}
	ip, perr := netip.ParseAddr(addr)
	if perr != nil || ip.Zone() != "" || (s.family == "inet") != ip.Is4() {
		return tcpip.FullAddress{}, badarg("bad address %s", addr)
	}
	fa := tcpip.FullAddress{Port: uint16(p)}
	if !ip.IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(ip.AsSlice())
	}
	return fa, nil
}

// addrFields writes an address as the protocol wants it: the family's
// unspecified address for the stack's empty one, and an IPv4 address on an
// inet6 (dual-stack) socket in the mixed IPv4-mapped form.
func addrFields(s *sock, fa tcpip.FullAddress) []field {
	var ip netip.Addr
	switch {
	case fa.Addr.Len() == 0 && s.family == "inet":
		ip = netip.IPv4Unspecified()
	case fa.Addr.Len() == 0:
		ip = netip.IPv6Unspecified()
	case fa.Addr.Len() == 4 && s.family == "inet6":
		ip = netip.AddrFrom16(netip.AddrFrom4(fa.Addr.As4()).As16())
	default:
		ip, _ = netip.AddrFromSlice(fa.Addr.AsSlice())
	}
	return []field{{"addr", ip.String()}, {"port", strconv.Itoa(int(fa.Port))}}
}

// deadline parses MS: the zero time for `none`.
func deadline(text string) (time.Time, error) {
	d, ok, err := timeout(text)
	if !ok || err != nil {
		return time.Time{}, err
	}
	return time.Now().Add(d), nil
}

// block runs try until it stops answering ErrWouldBlock, waiting on the
// endpoint's waiter queue for mask in between, until dl (the call's own
// timeout; the zero time: none). A non-blocking socket tries once.
func block(s *sock, mask waiter.EventMask, dl time.Time, try func() tcpip.Error) error {
	entry, ch := waiter.NewChannelEntry(mask)
	s.wq.EventRegister(&entry)
	defer s.wq.EventUnregister(&entry)
	var expired <-chan time.Time
	if !dl.IsZero() {
		t := time.NewTimer(time.Until(dl))
		defer t.Stop()
		expired = t.C
	}
	for {
		terr := try()
		if _, again := terr.(*tcpip.ErrWouldBlock); !again || s.nonblock {
			return fail(terr)
		}
		select {
		case <-ch:
		case <-expired:
			return errTimeout
		}
	}
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
	netProto, transProto := ipv4.ProtocolNumber, tcp.ProtocolNumber
	if family == "inet6" {
		netProto = ipv6.ProtocolNumber
	}
	if kind == "udp" {
		transProto = udp.ProtocolNumber
	}
	s := &sock{kind: kind, family: family, wq: &waiter.Queue{}}
	err := a.timed(func() error {
		var terr tcpip.Error
		s.ep, terr = a.net.s.NewEndpoint(transProto, netProto, s.wq)
		return fail(terr)
	})
	if err != nil {
		return nil, err
	}
	return a.add(s), nil
}

func (a *agent) opSetsockopt(args []string) ([]field, error) {
	s, _, err := a.handle(args[0])
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
	var v []int
	for _, text := range values {
		n, err := number(text, 0, 1<<31-1)
		if err != nil {
			return nil, err
		}
		v = append(v, n)
	}
	return nil, a.timed(func() error {
		switch name {
		case "reuseaddr":
			s.ep.SocketOptions().SetReuseAddress(v[0] != 0)
		case "linger":
			s.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: v[0] != 0, Timeout: time.Duration(v[1]) * time.Second})
		case "syncnt":
			return fail(s.ep.SetSockOptInt(tcpip.TCPSynCountOption, v[0]))
		case "user_timeout":
			opt := tcpip.TCPUserTimeoutOption(time.Duration(v[0]) * time.Millisecond)
			return fail(s.ep.SetSockOpt(&opt))
		case "nonblock":
			// Every endpoint call is non-blocking; blocking is the agent's
			// waiting on the waiter queue, as in gVisor's socket layer.
			s.nonblock = v[0] != 0
		}
		return nil
	})
}

func (a *agent) opGetsockopt(args []string) ([]field, error) {
	s, _, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	name := args[1]
	if _, ok := optArgs[name]; !ok {
		return nil, badarg("unknown option %s", name)
	}
	var value string
	err = a.timed(func() error {
		b := map[bool]string{false: "0", true: "1"}
		switch name {
		case "reuseaddr":
			value = b[s.ep.SocketOptions().GetReuseAddress()]
		case "linger":
			l := s.ep.SocketOptions().GetLinger()
			value = fmt.Sprintf("%s,%d", b[l.Enabled], int(l.Timeout/time.Second))
		case "syncnt":
			v, terr := s.ep.GetSockOptInt(tcpip.TCPSynCountOption)
			value = strconv.Itoa(v)
			return fail(terr)
		case "user_timeout":
			var opt tcpip.TCPUserTimeoutOption
			terr := s.ep.GetSockOpt(&opt)
			value = strconv.FormatInt(time.Duration(opt).Milliseconds(), 10)
			return fail(terr)
		case "nonblock":
			value = b[s.nonblock]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return []field{{"value", value}}, nil
}

func (a *agent) opBind(args []string) ([]field, error) {
	s, _, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	fa, err := fullAddress(s, args[1], args[2])
	if err != nil {
		return nil, err
	}
	return nil, a.timed(func() error { return fail(s.ep.Bind(fa)) })
}

func (a *agent) opListen(args []string) ([]field, error) {
	s, _, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	backlog := defaultBacklog
	if args[1] != "default" {
		if backlog, err = number(args[1], 0, 1<<31-1); err != nil {
			return nil, err
		}
		if a.cfg.sentryBacklog {
			backlog = min(backlog, sentryMaxBacklog) + 1
		}
	}
	return nil, a.timed(func() error { return fail(s.ep.Listen(backlog)) })
}

func (a *agent) opAccept(args []string) ([]field, error) {
	s, _, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	dl, err := deadline(args[1])
	if err != nil {
		return nil, err
	}
	var n tcpip.Endpoint
	var nwq *waiter.Queue
	var peer tcpip.FullAddress
	err = a.timed(func() error {
		return block(s, waiter.ReadableEvents|waiter.EventHUp|waiter.EventErr, dl, func() tcpip.Error {
			var terr tcpip.Error
			n, nwq, terr = s.ep.Accept(&peer)
			return terr
		})
	})
	if err != nil {
		return nil, err
	}
	c := &sock{kind: s.kind, family: s.family, ep: n, wq: nwq}
	return append(a.add(c), addrFields(c, peer)...), nil
}

// connecting: the endpoint's handshake has not ended yet.
func connecting(ep tcpip.Endpoint) bool {
	switch tcp.EndpointState(ep.State()) {
	case tcp.StateConnecting, tcp.StateSynSent, tcp.StateSynRecv:
		return true
	}
	return false
}

func (a *agent) opConnect(args []string) ([]field, error) {
	s, _, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	fa, err := fullAddress(s, args[1], args[2])
	if err != nil {
		return nil, err
	}
	dl, err := deadline(args[3])
	if err != nil {
		return nil, err
	}
	return nil, a.timed(func() error {
		terr := s.ep.Connect(fa)
		if _, started := terr.(*tcpip.ErrConnectStarted); !started || s.nonblock {
			return fail(terr) // done (UDP, an error at once) or EINPROGRESS
		}
		// As the sentry's blocking connect: wait until writable (or an error),
		// then the endpoint's last error is the outcome.
		return block(s, waiter.WritableEvents|waiter.EventHUp|waiter.EventErr, dl, func() tcpip.Error {
			if connecting(s.ep) {
				return &tcpip.ErrWouldBlock{}
			}
			return s.ep.LastError()
		})
	})
}

func (a *agent) opSend(args []string) ([]field, error) {
	s, _, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	data := []byte{}
	if args[1] != "-" {
		if data, err = hex.DecodeString(args[1]); err != nil {
			return nil, badarg("bad hex")
		}
	}
	sent := 0
	err = a.timed(func() error {
		return block(s, waiter.WritableEvents|waiter.EventHUp|waiter.EventErr, time.Time{}, func() tcpip.Error {
			for {
				n, terr := s.ep.Write(bytes.NewReader(data[sent:]), tcpip.WriteOptions{})
				sent += int(n)
				if terr != nil {
					if _, again := terr.(*tcpip.ErrWouldBlock); again && sent > 0 && s.nonblock {
						return nil // a partial non-blocking send
					}
					return terr
				}
				if sent >= len(data) || s.kind == "udp" {
					return nil
				}
			}
		})
	})
	if err != nil {
		return nil, err
	}
	return []field{{"n", strconv.Itoa(sent)}}, nil
}

func (a *agent) opRecv(args []string) ([]field, error) {
	s, _, err := a.handle(args[0])
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
	var buf bytes.Buffer
	var res tcpip.ReadResult
	eof := false
	err = a.timed(func() error {
		return block(s, waiter.ReadableEvents|waiter.EventHUp|waiter.EventErr, dl, func() tcpip.Error {
			buf.Reset()
			var terr tcpip.Error
			res, terr = s.ep.Read(&tcpip.LimitedWriter{W: &buf, N: int64(size)}, tcpip.ReadOptions{NeedRemoteAddr: s.kind == "udp"})
			if _, closed := terr.(*tcpip.ErrClosedForReceive); closed {
				eof = true
				return nil
			}
			return terr
		})
	})
	if err != nil {
		return nil, err
	}
	data := hex.EncodeToString(buf.Bytes())
	if data == "" || eof {
		data = "-"
	}
	reply := []field{{"n", strconv.Itoa(len(data) / 2)}, {"data", data}}
	if s.kind == "udp" && !eof {
		reply = append(reply, addrFields(s, res.RemoteAddr)...)
	}
	return reply, nil
}

func (a *agent) opShutdown(args []string) ([]field, error) {
	s, _, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	flags := map[string]tcpip.ShutdownFlags{"rd": tcpip.ShutdownRead, "wr": tcpip.ShutdownWrite,
		"rdwr": tcpip.ShutdownRead | tcpip.ShutdownWrite}[args[1]]
	if flags == 0 {
		return nil, badarg("unknown keyword %s", args[1])
	}
	return nil, a.timed(func() error { return fail(s.ep.Shutdown(flags)) })
}

func (a *agent) opClose(args []string) ([]field, error) {
	s, h, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	stateMu.Lock()
	delete(a.socks, h)
	stateMu.Unlock()
	return nil, a.timed(func() error {
		// As the sentry's Release: close, then with SO_LINGER {1, N > 0} on a
		// blocking TCP socket wait up to N s for the connection to end.
		entry, ch := waiter.NewChannelEntry(waiter.EventHUp | waiter.EventErr)
		s.wq.EventRegister(&entry)
		defer s.wq.EventUnregister(&entry)
		s.ep.Close()
		if l := s.ep.SocketOptions().GetLinger(); s.kind == "tcp" && l.Enabled && l.Timeout > 0 && !s.nonblock {
			select {
			case <-ch:
			case <-time.After(l.Timeout):
			}
		}
		return nil
	})
}

func (a *agent) opGetsockname(args []string) ([]field, error) {
	s, _, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	var fa tcpip.FullAddress
	err = a.timed(func() error {
		var terr tcpip.Error
		fa, terr = s.ep.GetLocalAddress()
		return fail(terr)
	})
	if err != nil {
		return nil, err
	}
	return addrFields(s, fa), nil
}

func (a *agent) opGetpeername(args []string) ([]field, error) {
	s, _, err := a.handle(args[0])
	if err != nil {
		return nil, err
	}
	var fa tcpip.FullAddress
	err = a.timed(func() error {
		var terr tcpip.Error
		fa, terr = s.ep.GetRemoteAddress()
		return fail(terr)
	})
	if err != nil {
		return nil, err
	}
	return addrFields(s, fa), nil
}

var _ = strings.Cut
