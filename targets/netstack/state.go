package main

// The optional introspection commands (README.md, "Protocol extension"):
// the stack's own tables, the evidence the kernel of the target namespace
// cannot give for a stack it does not run.
//
//	sockets          -> ok US n=N rows=ROW~ROW~...   (rows=- when none)
//	                    ROW = PROTO/STATE/SRC/SPORT/DST/DPORT/RQ/WQ/SHUT
//	counters         -> ok US Tcp.ActiveOpens=N TcpExt.ListenOverflows=N ...
//	neighbour ADDR   -> ok US state=FAILED lladdr=aa:bb:cc:dd:ee:ff   (state=- when none)

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// stateMu guards agent.socks, which the introspection channel reads while
// a command blocks.
var stateMu sync.Mutex

// The kernel's names (conformance/topology.py TCP_STATES): tcp.EndpointState
// numbers its protocol states as Linux does (1 ESTABLISHED ... 11 CLOSING).
var tcpStates = map[tcp.EndpointState]string{
	tcp.StateEstablished: "ESTABLISHED",
	tcp.StateSynSent:     "SYN_SENT",
	tcp.StateSynRecv:     "SYN_RECV",
	tcp.StateFinWait1:    "FIN_WAIT1",
	tcp.StateFinWait2:    "FIN_WAIT2",
	tcp.StateTimeWait:    "TIME_WAIT",
	tcp.StateCloseWait:   "CLOSE_WAIT",
	tcp.StateLastAck:     "LAST_ACK",
	tcp.StateListen:      "LISTEN",
	tcp.StateClosing:     "CLOSING",
	// Internal to netstack: a bound socket is the kernel's bound-inactive
	// CLOSE row; Connect() before the SYN left is SYN_SENT. INITIAL (not
	// bound), CLOSED and ERROR are in no kernel table: not listed.
	tcp.StateBound:      "CLOSE",
	tcp.StateConnecting: "SYN_SENT",
}

// peek reads an unexported field of the stack's structures (a dotted path)
// as an int, through reflection, without the endpoint's lock: a word read
// that can be one update late, never torn. ok is false if this version of
// the stack has no such field.
func peek(v any, path string) (int, bool) {
	rv := reflect.ValueOf(v)
	for _, name := range strings.Split(path, ".") {
		for rv.Kind() == reflect.Pointer || rv.Kind() == reflect.Interface {
			if rv.IsNil() {
				return 0, false
			}
			rv = rv.Elem()
		}
		if rv.Kind() != reflect.Struct {
			return 0, false
		}
		rv = rv.FieldByName(name)
		if !rv.IsValid() {
			return 0, false
		}
	}
	switch rv.Kind() {
	case reflect.Bool:
		if rv.Bool() {
			return 1, true
		}
		return 0, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return int(rv.Int()), true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return int(rv.Uint()), true
	}
	return 0, false
}

// peekOr: peek, or -1 where this version of the stack has no such field
// (never a plausible 0).
func peekOr(v any, path string) int {
	if n, ok := peek(v, path); ok {
		return n
	}
	return -1
}

func addrText(a tcpip.Address, v6 bool) string {
	switch {
	case a.Len() == 0 && v6:
		return "::"
	case a.Len() == 0:
		return "0.0.0.0"
	case a.Len() == 4 && v6:
		return netip.AddrFrom16(netip.AddrFrom4(a.As4()).As16()).String()
	}
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip.String()
}

type row struct {
	proto, state string
	src          string
	sport        int
	dst          string
	dport        int
	rq, wq       int
	shut         string // none, rd, wr, rdwr; closed: held by no handle (the kernel's orphan)
	rto          int    // ms: the retransmission timeout in force (tcp_info's rto); -1: none (UDP, no sender)
}

func (a *agent) rows() []row {
	eps := map[tcpip.Endpoint]bool{}
	for _, ep := range a.net.s.RegisteredEndpoints() {
		if e, ok := ep.(tcpip.Endpoint); ok {
			eps[e] = true
		}
	}
	// Bound but neither listening nor connected: in no demuxer table, only in the agent's handles.
	held := map[tcpip.Endpoint]bool{}
	stateMu.Lock()
	for _, s := range a.socks {
		eps[s.ep], held[s.ep] = true, true
	}
	stateMu.Unlock()

	var rows []row
	for ep := range eps {
		info, ok := ep.Info().(*stack.TransportEndpointInfo)
		if !ok {
			continue
		}
		v6 := info.NetProto == ipv6.ProtocolNumber
		r := row{src: addrText(info.ID.LocalAddress, v6), sport: int(info.ID.LocalPort),
			dst: addrText(info.ID.RemoteAddress, v6), dport: int(info.ID.RemotePort), shut: "closed", rto: -1}
		switch e := ep.(type) {
		case *tcp.Endpoint:
			r.proto = "tcp"
			st := tcp.EndpointState(e.State())
			if r.state, ok = tcpStates[st]; !ok {
				continue
			}
			if st == tcp.StateListen {
				// The accept queue (connections not yet accepted) and its
				// capacity, the backlog in force: unexported in tcp.Endpoint.
				r.rq = peekOr(e, "acceptQueue.endpoints.len")
				r.wq = peekOr(e, "acceptQueue.capacity")
			} else {
				r.rq, _ = e.GetSockOptInt(tcpip.ReceiveQueueSizeOption)
				r.wq = peekOr(e, "sndQueueInfo.SndBufUsed")
				var ti tcpip.TCPInfoOption
				if e.GetSockOpt(&ti) == nil && ti.RTO > 0 {
					r.rto = int(ti.RTO.Milliseconds())
				}
			}
			if held[ep] {
				// The kernel's sk_shutdown: the socket's own shutdown(), and RCV_SHUTDOWN once a FIN came.
				flags, _ := peek(e, "shutdownFlags")
				finReceived, _ := peek(e, "RcvClosed")
				rd := flags&int(tcpip.ShutdownRead) != 0 || finReceived == 1
				wr := flags&int(tcpip.ShutdownWrite) != 0
				r.shut = map[[2]bool]string{{false, false}: "none", {true, false}: "rd", {false, true}: "wr", {true, true}: "rdwr"}[[2]bool{rd, wr}]
			}
		default:
			if info.TransProto != udp.ProtocolNumber {
				continue
			}
			r.proto = "udp"
			switch transport.DatagramEndpointState(ep.State()) {
			case transport.DatagramEndpointStateBound:
				r.state = "CLOSE" // the kernel's state for an unconnected UDP socket
			case transport.DatagramEndpointStateConnected:
				r.state = "ESTABLISHED"
			default:
				continue
			}
			r.rq, _ = ep.GetSockOptInt(tcpip.ReceiveQueueSizeOption)
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		x, y := rows[i], rows[j]
		return fmt.Sprint(x.proto, x.sport, x.dport, x.src, x.dst, x.state) < fmt.Sprint(y.proto, y.sport, y.dport, y.src, y.dst, y.state)
	})
	return rows
}

func (a *agent) opSockets(args []string) ([]field, error) {
	rows := a.rows()
	text := make([]string, len(rows))
	for i, r := range rows {
		text[i] = fmt.Sprintf("%s/%s/%s/%d/%s/%d/%d/%d/%s/%d", r.proto, r.state, r.src, r.sport, r.dst, r.dport, r.rq, r.wq, r.shut, r.rto)
	}
	joined := strings.Join(text, "~")
	if joined == "" {
		joined = "-"
	}
	return []field{{"n", strconv.Itoa(len(rows))}, {"rows", joined}}, nil
}

// counters: the stack's Stats() under the kernel's names (/proc/net/netstat,
// snmp, snmp6: what conformance/topology.py Host.counters reads) where one
// has the same meaning, and only those. The stack counts UDP for IPv4 and
// IPv6 together: the total is reported under both Udp.* and Udp6.*.
func (a *agent) opCounters(args []string) ([]field, error) {
	st := a.net.s.Stats()
	t, u := st.TCP, st.UDP
	v := func(cs ...*tcpip.StatCounter) uint64 {
		var n uint64
		for _, c := range cs {
			n += c.Value()
		}
		return n
	}
	m := map[string]uint64{
		"Tcp.ActiveOpens":          v(t.ActiveConnectionOpenings),
		"Tcp.PassiveOpens":         v(t.PassiveConnectionOpenings),
		"Tcp.AttemptFails":         v(t.FailedConnectionAttempts),
		"Tcp.EstabResets":          v(t.EstablishedResets),
		"Tcp.CurrEstab":            v(t.CurrentEstablished),
		"Tcp.InSegs":               v(t.ValidSegmentsReceived, t.InvalidSegmentsReceived),
		"Tcp.OutSegs":              v(t.SegmentsSent),
		"Tcp.RetransSegs":          v(t.Retransmits),
		"Tcp.InErrs":               v(t.InvalidSegmentsReceived),
		"Tcp.InCsumErrors":         v(t.ChecksumErrors),
		"Tcp.OutRsts":              v(t.ResetsSent),
		"TcpExt.ListenOverflows":   v(t.ListenOverflowSynDrop, t.ListenOverflowAckDrop),
		"TcpExt.ListenDrops":       v(t.ListenOverflowSynDrop, t.ListenOverflowAckDrop),
		"TcpExt.SyncookiesSent":    v(t.ListenOverflowSynCookieSent),
		"TcpExt.SyncookiesRecv":    v(t.ListenOverflowSynCookieRcvd),
		"TcpExt.SyncookiesFailed":  v(t.ListenOverflowInvalidSynCookieRcvd),
		"TcpExt.TCPTimeouts":       v(t.Timeouts),
		"TcpExt.TCPAbortOnTimeout": v(t.EstablishedTimedout),
		"Icmp.InDestUnreachs":      v(st.ICMP.V4.PacketsReceived.DstUnreachable),
		"Icmp.OutDestUnreachs":     v(st.ICMP.V4.PacketsSent.DstUnreachable),
		"Icmp6.InDestUnreachs":     v(st.ICMP.V6.PacketsReceived.DstUnreachable),
		"Icmp6.OutDestUnreachs":    v(st.ICMP.V6.PacketsSent.DstUnreachable),
	}
	for _, p := range []string{"Udp.", "Udp6."} {
		m[p+"InDatagrams"] = v(u.PacketsReceived)
		m[p+"NoPorts"] = v(u.UnknownPortErrors)
		m[p+"InErrors"] = v(u.MalformedPacketsReceived, u.ReceiveBufferErrors, u.ChecksumErrors)
		m[p+"RcvbufErrors"] = v(u.ReceiveBufferErrors)
		m[p+"OutDatagrams"] = v(u.PacketsSent)
		m[p+"InCsumErrors"] = v(u.ChecksumErrors)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fields := make([]field, len(keys))
	for i, k := range keys {
		fields[i] = field{k, strconv.FormatUint(m[k], 10)}
	}
	return fields, nil
}

// The kernel's NUD names (conformance/topology.py NUD_STATES).
var nudStates = map[stack.NeighborState]string{
	stack.Incomplete:  "INCOMPLETE",
	stack.Reachable:   "REACHABLE",
	stack.Stale:       "STALE",
	stack.Delay:       "DELAY",
	stack.Probe:       "PROBE",
	stack.Static:      "PERMANENT",
	stack.Unreachable: "FAILED",
	stack.Unknown:     "NONE",
}

func (a *agent) opNeighbour(args []string) ([]field, error) {
	ip, err := netip.ParseAddr(args[0])
	if err != nil || ip.Zone() != "" || ip.Is4In6() {
		return nil, badarg("bad address %s", args[0])
	}
	proto := ipv4.ProtocolNumber
	if ip.Is6() {
		proto = ipv6.ProtocolNumber
	}
	entries, terr := a.net.s.Neighbors(nicID, proto)
	if terr != nil {
		return nil, fail(terr)
	}
	want := tcpip.AddrFromSlice(ip.AsSlice())
	for _, e := range entries {
		if e.Addr == want {
			f := []field{{"state", nudStates[e.State]}}
			if e.LinkAddr != "" {
				f = append(f, field{"lladdr", net.HardwareAddr(e.LinkAddr).String()})
			}
			return f, nil
		}
	}
	return []field{{"state", "-"}}, nil
}
