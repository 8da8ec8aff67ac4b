package main

// The stack's configuration, mirrored from the target namespace's kernel
// before every command: the addresses on --nic, the main table's unicast
// routes through it, its permanent (static) neighbour entries, and a few
// sysctls. Everything is read without a capability: rtnetlink dumps and
// /proc/sys/net (per network namespace). The harness configures the
// namespace exactly as it does for a kernel target (Topology.add_address,
// blackhole, route_through_peer, neighbour_probes, --sysctl); the kernel
// itself hears nothing (README.md, "Topology").

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

type mirrorState struct {
	watch     int                          // a NETLINK_ROUTE socket subscribed to address, route and neighbour changes; -1: none
	synced    bool                         // the tables were dumped, and no change was announced since
	routes    string                       // the route table last set, as text
	rtoRoute  time.Duration                // the largest locked rto_min metric on a route through the NIC; 0: none
	rtoSysctl time.Duration                // net.ipv4.tcp_rto_min_us; 0: this kernel has none
	rtoSet    time.Duration                // the stack's minimum RTO last set
	neighbors map[string]tcpip.LinkAddress // static entries this agent added: "proto|addr"
	sysctls   map[string]string
	files     map[string]*os.File // the sysctl files, open            // values last applied
	errs      map[string]bool     // mirror failures already reported on stderr
}

const (
	rtTableMain  = 254
	rtnUnicast   = 1
	nudNoARP     = 0x40
	nudPermanent = 0x80
	ndaDst       = 1
	ndaLLAddr    = 2
	rtaTable     = 15
	rtaMetrics   = 8  // RTA_METRICS: nested RTAX_* attributes
	rtaxLock     = 1  // RTAX_LOCK: a bit per metric the route locks
	rtaxRTOMin   = 13 // RTAX_RTO_MIN, in ms; the kernel uses it only when locked
)

func (a *agent) mirror() {
	n := a.net
	if n.mirror.neighbors == nil {
		n.mirror = mirrorState{neighbors: map[string]tcpip.LinkAddress{}, sysctls: map[string]string{}, files: map[string]*os.File{},
			errs: map[string]bool{}, watch: watchSocket()}
	}
	steps := map[string]func() error{"sysctls": func() error { return n.mirrorSysctls(a.cfg.nic) }}
	// The netlink tables only when they may have changed: the kernel announces
	// a change on the watch socket before the harness's own request returns.
	if changed(n.mirror.watch) || !n.mirror.synced {
		n.mirror.synced = n.mirror.watch >= 0
		steps["addresses"], steps["routes"], steps["neighbours"] = n.mirrorAddresses, n.mirrorRoutes, n.mirrorNeighbours
	}
	for what, f := range steps {
		if err := f(); err != nil && !n.mirror.errs[what+err.Error()] {
			n.mirror.errs[what+err.Error()] = true
			fmt.Fprintf(os.Stderr, "netstack agent: mirroring the namespace's %s: %v\n", what, err)
		}
	}
}

// rtnetlink multicast groups (linux/rtnetlink.h); joining them needs no capability.
const rtmgrps = 0x4 /* NEIGH */ | 0x10 /* IPV4_IFADDR */ | 0x40 /* IPV4_ROUTE */ | 0x100 /* IPV6_IFADDR */ | 0x400 /* IPV6_ROUTE */

func watchSocket() int {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, syscall.NETLINK_ROUTE)
	if err != nil {
		return -1
	}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK, Groups: rtmgrps}); err != nil {
		syscall.Close(fd)
		return -1
	}
	return fd
}

// changed drains the watch socket: whether anything was announced (or lost: ENOBUFS).
func changed(fd int) bool {
	if fd < 0 {
		return true
	}
	buf := make([]byte, 65536)
	any := false
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err == syscall.EAGAIN {
			return any
		}
		if err != nil || n > 0 {
			any = true
		}
		if err != nil && err != syscall.ENOBUFS {
			return true
		}
	}
}

func rib(typ, family int) ([]syscall.NetlinkMessage, error) {
	tab, err := syscall.NetlinkRIB(typ, family)
	if err != nil {
		return nil, err
	}
	return syscall.ParseNetlinkMessage(tab)
}

func protoOf(addr tcpip.Address) tcpip.NetworkProtocolNumber {
	if addr.Len() == 4 {
		return ipv4.ProtocolNumber
	}
	return ipv6.ProtocolNumber
}

func (n *netstack) mirrorAddresses() error {
	msgs, err := rib(syscall.RTM_GETADDR, syscall.AF_UNSPEC)
	if err != nil {
		return err
	}
	want := map[tcpip.Address]tcpip.ProtocolAddress{}
	for _, m := range msgs {
		if m.Header.Type != syscall.RTM_NEWADDR || len(m.Data) < syscall.SizeofIfAddrmsg {
			continue
		}
		ifa := (*syscall.IfAddrmsg)(unsafePointer(&m.Data[0]))
		if int(ifa.Index) != n.ifindex {
			continue
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(&m)
		if err != nil {
			return err
		}
		var addr []byte
		for _, at := range attrs {
			// IFA_LOCAL is the address itself where both are given (IPv4).
			if at.Attr.Type == syscall.IFA_LOCAL || (at.Attr.Type == syscall.IFA_ADDRESS && addr == nil) {
				addr = at.Value
			}
		}
		if len(addr) != 4 && len(addr) != 16 {
			continue
		}
		a := tcpip.AddrFromSlice(addr)
		want[a] = tcpip.ProtocolAddress{Protocol: protoOf(a),
			AddressWithPrefix: tcpip.AddressWithPrefix{Address: a, PrefixLen: int(ifa.Prefixlen)}}
	}
	have := map[tcpip.Address]tcpip.ProtocolAddress{}
	for _, pa := range n.s.AllAddresses()[nicID] {
		have[pa.AddressWithPrefix.Address] = pa
	}
	for a, pa := range have {
		if w, ok := want[a]; !ok || w.AddressWithPrefix.PrefixLen != pa.AddressWithPrefix.PrefixLen {
			if terr := n.s.RemoveAddress(nicID, a); terr != nil {
				return fmt.Errorf("RemoveAddress %s: %s", a, terr)
			}
			delete(have, a)
		}
	}
	for a, pa := range want {
		if _, ok := have[a]; !ok {
			if terr := n.s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); terr != nil {
				return fmt.Errorf("AddProtocolAddress %s: %s", pa.AddressWithPrefix, terr)
			}
		}
	}
	return nil
}

// lockedRTOMin reads a route's RTA_METRICS: its RTAX_RTO_MIN when RTAX_LOCK
// locks it (as `ip route ... rto_min 3s` sets it), else 0.
func lockedRTOMin(metrics []byte) time.Duration {
	var lock, rto uint32
	for len(metrics) >= 4 {
		l := int(binary.NativeEndian.Uint16(metrics[0:2]))
		typ := binary.NativeEndian.Uint16(metrics[2:4]) & 0x3fff
		if l < 4 || l > len(metrics) {
			break
		}
		if l >= 8 {
			v := binary.NativeEndian.Uint32(metrics[4:8])
			switch typ {
			case rtaxLock:
				lock = v
			case rtaxRTOMin:
				rto = v
			}
		}
		metrics = metrics[min((l+3)&^3, len(metrics)):]
	}
	if lock&(1<<rtaxRTOMin) == 0 {
		return 0
	}
	return time.Duration(rto) * time.Millisecond
}

// applyMinRTO sets the stack's minimum RTO as the kernel would pick it for a
// connection through the NIC: a locked rto_min metric on its route wins over
// the sysctl tcp_rto_min_us, which wins over the default. The stack has one
// value for every connection (read when a connection's sender is made, as the
// kernel reads the route at connect/accept): the largest locked metric of the
// NIC's routes stands for all of them.
func (n *netstack) applyMinRTO() error {
	rto := tcp.MinRTO
	switch {
	case n.mirror.rtoRoute > 0:
		rto = n.mirror.rtoRoute
	case n.mirror.rtoSysctl > 0:
		rto = n.mirror.rtoSysctl
	}
	if rto == n.mirror.rtoSet {
		return nil
	}
	opt := tcpip.TCPMinRTOOption(rto)
	if terr := n.s.SetTransportProtocolOption(tcp.ProtocolNumber, &opt); terr != nil {
		return fmt.Errorf("minimum RTO %v: %v", rto, terr)
	}
	n.mirror.rtoSet = rto
	return nil
}

func (n *netstack) mirrorRoutes() error {
	var table []tcpip.Route
	var rtoRoute time.Duration
	for _, family := range []int{syscall.AF_INET, syscall.AF_INET6} {
		msgs, err := rib(syscall.RTM_GETROUTE, family)
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type != syscall.RTM_NEWROUTE || len(m.Data) < syscall.SizeofRtMsg {
				continue
			}
			rt := (*syscall.RtMsg)(unsafePointer(&m.Data[0]))
			attrs, err := syscall.ParseNetlinkRouteAttr(&m)
			if err != nil {
				return err
			}
			tableID := uint32(rt.Table)
			var dst, gw, metrics []byte
			oif := 0
			for _, at := range attrs {
				switch at.Attr.Type {
				case syscall.RTA_DST:
					dst = at.Value
				case syscall.RTA_GATEWAY:
					gw = at.Value
				case syscall.RTA_OIF:
					oif = int(binary.NativeEndian.Uint32(at.Value))
				case rtaTable:
					tableID = binary.NativeEndian.Uint32(at.Value)
				case rtaMetrics:
					metrics = at.Value
				}
			}
			// Routes of other types (unreachable, prohibit, blackhole) have no
			// equivalent in the stack's route table: not mirrored.
			if tableID != rtTableMain || rt.Type != rtnUnicast || oif != n.ifindex {
				continue
			}
			size := 4
			if family == syscall.AF_INET6 {
				size = 16
			}
			if dst == nil {
				dst = make([]byte, size)
			}
			sub, err := tcpip.NewSubnet(tcpip.AddrFromSlice(dst),
				tcpip.MaskFromBytes(net.CIDRMask(int(rt.Dst_len), size*8)))
			if err != nil {
				return fmt.Errorf("route %x/%d: %w", dst, rt.Dst_len, err)
			}
			r := tcpip.Route{Destination: sub, NIC: nicID}
			if gw != nil {
				r.Gateway = tcpip.AddrFromSlice(gw)
			}
			table = append(table, r)
			if rto := lockedRTOMin(metrics); rto > rtoRoute {
				rtoRoute = rto
			}
		}
	}
	if rtoRoute != n.mirror.rtoRoute {
		n.mirror.rtoRoute = rtoRoute
		if err := n.applyMinRTO(); err != nil {
			return err
		}
	}
	table = append(table, loopbackRoutes...)
	sort.SliceStable(table, func(i, j int) bool { return table[i].Destination.Prefix() > table[j].Destination.Prefix() })
	text := fmt.Sprint(table)
	if text != n.mirror.routes {
		n.s.SetRouteTable(table)
		n.mirror.routes = text
	}
	return nil
}

func (n *netstack) mirrorNeighbours() error {
	msgs, err := rib(syscall.RTM_GETNEIGH, syscall.AF_UNSPEC)
	if err != nil {
		return err
	}
	want := map[string]tcpip.LinkAddress{}
	for _, m := range msgs {
		// struct ndmsg: family u8, pad u8, pad u16, ifindex s32, state u16, flags u8, type u8.
		if m.Header.Type != syscall.RTM_NEWNEIGH || len(m.Data) < 12 {
			continue
		}
		ifindex := int(int32(binary.NativeEndian.Uint32(m.Data[4:8])))
		state := binary.NativeEndian.Uint16(m.Data[8:10])
		if ifindex != n.ifindex || state&(nudPermanent|nudNoARP) == 0 {
			continue
		}
		var dst, ll []byte
		for b := m.Data[12:]; len(b) >= 4; {
			l := int(binary.NativeEndian.Uint16(b[0:2]))
			typ := binary.NativeEndian.Uint16(b[2:4])
			if l < 4 || l > len(b) {
				break
			}
			switch typ {
			case ndaDst:
				dst = b[4:l]
			case ndaLLAddr:
				ll = b[4:l]
			}
			al := (l + 3) &^ 3
			if al > len(b) {
				break
			}
			b = b[al:]
		}
		if (len(dst) != 4 && len(dst) != 16) || len(ll) != 6 {
			continue
		}
		addr := tcpip.AddrFromSlice(dst)
		want[fmt.Sprintf("%d|%s", protoOf(addr), addr)] = tcpip.LinkAddress(ll)
	}
	for key, ll := range want {
		if n.mirror.neighbors[key] == ll {
			continue
		}
		proto, addr := splitNeighKey(key)
		if terr := n.s.AddStaticNeighbor(nicID, proto, addr, ll); terr != nil {
			return fmt.Errorf("AddStaticNeighbor %s: %s", addr, terr)
		}
		n.mirror.neighbors[key] = ll
	}
	for key := range n.mirror.neighbors {
		if _, ok := want[key]; !ok {
			proto, addr := splitNeighKey(key)
			n.s.RemoveNeighbor(nicID, proto, addr)
			delete(n.mirror.neighbors, key)
		}
	}
	return nil
}

func splitNeighKey(key string) (tcpip.NetworkProtocolNumber, tcpip.Address) {
	p, a, _ := strings.Cut(key, "|")
	proto, _ := strconv.Atoi(p)
	ip := net.ParseIP(a)
	if tcpip.NetworkProtocolNumber(proto) == ipv4.ProtocolNumber {
		return ipv4.ProtocolNumber, tcpip.AddrFromSlice(ip.To4())
	}
	return ipv6.ProtocolNumber, tcpip.AddrFromSlice(ip.To16())
}

// The sysctls the stack has an equivalent for. Everything else a case sets
// (tcp_abort_on_overflow, somaxconn, tcp_max_tw_buckets, tcp_synack_retries,
// tcp_syncookies=0...) has none and does not reach the stack.
func (n *netstack) mirrorSysctls(ifname string) error {
	read := func(key string) (string, bool) {
		// Opened once, read again from offset 0: a path lookup in /proc/sys costs far more than the read.
		f, ok := n.mirror.files[key]
		if !ok {
			f, _ = os.Open("/proc/sys/net/" + strings.ReplaceAll(key, ".", "/"))
			n.mirror.files[key] = f // nil: this kernel has no such sysctl
		}
		if f == nil {
			return "", false
		}
		buf := make([]byte, 256)
		m, err := f.ReadAt(buf, 0)
		if err != nil && m == 0 {
			return "", false
		}
		v := strings.Join(strings.Fields(string(buf[:m])), " ")
		if n.mirror.sysctls[key] == v {
			return "", false
		}
		n.mirror.sysctls[key] = v
		return v, true
	}
	var errs []string
	fail := func(key, v string, err any) {
		errs = append(errs, fmt.Sprintf("%s=%s: %v", key, v, err))
	}
	if v, ok := read("ipv4.ip_local_port_range"); ok {
		var lo, hi uint16
		if _, err := fmt.Sscan(v, &lo, &hi); err != nil {
			fail("ip_local_port_range", v, err)
		} else if terr := n.s.SetPortRange(lo, hi); terr != nil {
			fail("ip_local_port_range", v, terr)
		}
	}
	if v, ok := read("ipv4.tcp_syn_retries"); ok {
		if r, err := strconv.Atoi(v); err != nil {
			fail("tcp_syn_retries", v, err)
		} else {
			opt := tcpip.TCPSynRetriesOption(r)
			if terr := n.s.SetTransportProtocolOption(tcp.ProtocolNumber, &opt); terr != nil {
				fail("tcp_syn_retries", v, terr)
			}
		}
	}
	if v, ok := read("ipv4.tcp_rto_min_us"); ok {
		// The kernel's per-namespace floor of the retransmission timeout (6.11+); the stack's is stack-wide.
		if us, err := strconv.Atoi(v); err != nil {
			fail("tcp_rto_min_us", v, err)
		} else {
			n.mirror.rtoSysctl = time.Duration(us) * time.Microsecond
			if err := n.applyMinRTO(); err != nil {
				fail("tcp_rto_min_us", v, err)
			}
		}
	}
	if v, ok := read("ipv4.tcp_sack"); ok {
		opt := tcpip.TCPSACKEnabled(v != "0")
		if terr := n.s.SetTransportProtocolOption(tcp.ProtocolNumber, &opt); terr != nil {
			fail("tcp_sack", v, terr)
		}
	}
	if v, ok := read("ipv4.tcp_syncookies"); ok {
		// 2: always; 1 and 0 are both the stack's own rule (cookies once the SYN queue holds backlog requests).
		opt := tcpip.TCPAlwaysUseSynCookies(v == "2")
		if terr := n.s.SetTransportProtocolOption(tcp.ProtocolNumber, &opt); terr != nil {
			fail("tcp_syncookies", v, terr)
		}
	}
	for _, p := range []struct {
		ip    string
		proto tcpip.NetworkProtocolNumber
	}{{"ipv4", ipv4.ProtocolNumber}, {"ipv6", ipv6.ProtocolNumber}} {
		changed := false
		vals := map[string]string{}
		for _, k := range []string{"mcast_solicit", "ucast_solicit", "retrans_time_ms", "base_reachable_time_ms", "delay_first_probe_time"} {
			key := fmt.Sprintf("%s.neigh.%s.%s", p.ip, ifname, k)
			if _, ok := read(key); ok {
				changed = true
			}
			vals[k] = n.mirror.sysctls[key]
		}
		if !changed {
			continue
		}
		c, terr := n.s.NUDConfigurations(nicID, p.proto)
		if terr != nil {
			fail(p.ip+".neigh", "", terr)
			continue
		}
		atoi := func(k string) int { v, _ := strconv.Atoi(vals[k]); return v }
		if v := atoi("mcast_solicit"); v > 0 {
			c.MaxMulticastProbes = uint32(v)
		}
		if v := atoi("ucast_solicit"); v > 0 {
			c.MaxUnicastProbes = uint32(v)
		}
		if v := atoi("retrans_time_ms"); v > 0 {
			c.RetransmitTimer = time.Duration(v) * time.Millisecond
		}
		if v := atoi("base_reachable_time_ms"); v > 0 {
			c.BaseReachableTime = time.Duration(v) * time.Millisecond
		}
		if v := atoi("delay_first_probe_time"); v > 0 {
			c.DelayFirstProbeTime = time.Duration(v) * time.Second
		}
		if terr := n.s.SetNUDConfigurations(nicID, p.proto, c); terr != nil {
			fail(p.ip+".neigh", "", terr)
		}
	}
	if errs != nil {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}
