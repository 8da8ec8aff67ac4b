package main

import (
	"fmt"
	"net"
	"time"

	"golang.org/x/sys/unix"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/link/loopback"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

const (
	nicID      tcpip.NICID = 1 // the veth, through the packet socket
	loopbackID tcpip.NICID = 2 // the stack's own loopback: 127.0.0.1/8, ::1
)

// loopbackRoutes: the stack's loopback NIC, beside the mirrored table.
var loopbackRoutes = []tcpip.Route{
	{Destination: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4([4]byte{127, 0, 0, 0}), PrefixLen: 8}.Subnet(), NIC: loopbackID},
	{Destination: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom16([16]byte{15: 1}), PrefixLen: 128}.Subnet(), NIC: loopbackID},
}

type config struct {
	nic           string
	fd            int
	stateFD       int
	sentryBacklog bool
	settle        time.Duration
}

// netstack: the stack and what the agent mirrored into it.
type netstack struct {
	s       *stack.Stack
	fd      int // the packet socket
	ifindex int
	mac     net.HardwareAddr
	mirror  mirrorState
}

func newAgent(cfg config) (*agent, error) {
	ifc, err := net.InterfaceByName(cfg.nic)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", cfg.nic, err)
	}
	fd := cfg.fd
	if fd < 0 {
		// By hand only: the harness passes the socket, so the agent needs no capability.
		if fd, err = openPacketSocket(ifc.Index); err != nil {
			return nil, fmt.Errorf("no --fd, and opening an AF_PACKET socket on %s failed (it needs CAP_NET_RAW): %w", cfg.nic, err)
		}
	} else if err := checkPacketSocket(fd, ifc.Index); err != nil {
		return nil, err
	}
	// Frames the kernel of this namespace sends itself (IPv6 multicast
	// listener reports, say) are seen by a packet socket as outgoing: keep
	// them from the stack. A classic BPF filter needs no capability.
	if err := dropOutgoing(fd); err != nil {
		return nil, fmt.Errorf("SO_ATTACH_FILTER on fd %d: %w", fd, err)
	}

	s := stack.New(stack.Options{
		NetworkProtocols: []stack.NetworkProtocolFactory{
			ipv4.NewProtocol,
			// Addresses are mirrored from the kernel, which has no DAD on them
			// (nodad, accept_dad=0): none here either, nor router solicitations
			// or address autoconfiguration (the kernel's link-local is mirrored).
			ipv6.NewProtocolWithOptions(ipv6.Options{
				DADConfigs: stack.DADConfigurations{DupAddrDetectTransmits: 0},
			}),
			arp.NewProtocol,
		},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol},
		HandleLocal:        true,
	})
	link, err := fdbased.New(&fdbased.Options{
		FDs:            []int{fd},
		MTU:            uint32(ifc.MTU),
		EthernetHeader: true,
		Address:        tcpip.LinkAddress(ifc.HardwareAddr),
		// A veth peer's kernel leaves the checksums of what it sends to the
		// receiver (CHECKSUM_PARTIAL): the frames reach the packet socket with
		// them unfilled, so the stack must not verify them.
		RXChecksumOffload: true,
		// One socket: no PACKET_FANOUT group to make.
		PreConfigured:  true,
		IsPacketSocket: []bool{true},
	})
	if err != nil {
		return nil, fmt.Errorf("fdbased link endpoint: %w", err)
	}
	if terr := s.CreateNICWithOptions(nicID, link, stack.NICOptions{Name: cfg.nic}); terr != nil {
		return nil, fmt.Errorf("CreateNIC: %s", terr)
	}
	if terr := s.CreateNICWithOptions(loopbackID, loopback.New(), stack.NICOptions{Name: "lo"}); terr != nil {
		return nil, fmt.Errorf("CreateNIC lo: %s", terr)
	}
	for _, pa := range []tcpip.ProtocolAddress{
		{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4([4]byte{127, 0, 0, 1}), PrefixLen: 8}},
		{Protocol: ipv6.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom16([16]byte{15: 1}), PrefixLen: 128}},
	} {
		if terr := s.AddProtocolAddress(loopbackID, pa, stack.AddressProperties{}); terr != nil {
			return nil, fmt.Errorf("loopback address %s: %s", pa.AddressWithPrefix, terr)
		}
	}
	a := &agent{cfg: cfg, net: &netstack{s: s, fd: fd, ifindex: ifc.Index, mac: ifc.HardwareAddr}, socks: map[int]*sock{}}
	a.mirror()
	return a, nil
}

// SKF_AD_OFF + SKF_AD_PKTTYPE (linux/filter.h): the packet's pkt_type.
const (
	skfAdOff     = 0xfffff000
	skfAdPkttype = 4
)

// settle waits (at most 50 ms) until every frame the kernel has queued on the
// packet socket has been read by the link endpoint, then grace: so that the
// introspection commands answer for what reached the link before they were
// asked, as the kernel's tables do. The stack's own goroutines (the link's
// processors, TCP's segment processors) may still be at work after that:
// grace covers them; it is not a guarantee.
func (n *netstack) settle(grace time.Duration) {
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
		if v, err := unix.IoctlGetInt(n.fd, unix.SIOCINQ); err != nil || v == 0 {
			break
		}
		time.Sleep(20 * time.Microsecond)
	}
	if grace > 0 {
		time.Sleep(grace)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func openPacketSocket(ifindex int) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// checkPacketSocket: fd is an AF_PACKET socket bound to ifindex (all protocols).
func checkPacketSocket(fd, ifindex int) error {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("--fd %d: %w", fd, err)
	}
	ll, ok := sa.(*unix.SockaddrLinklayer)
	if !ok {
		return fmt.Errorf("--fd %d is not an AF_PACKET socket (%T)", fd, sa)
	}
	if ll.Ifindex != ifindex || ll.Protocol != htons(unix.ETH_P_ALL) {
		return fmt.Errorf("--fd %d is bound to ifindex %d protocol %#x; want ifindex %d, ETH_P_ALL",
			fd, ll.Ifindex, htons(ll.Protocol), ifindex)
	}
	unix.CloseOnExec(fd)
	return nil
}

// dropOutgoing: ld pkttype; jeq PACKET_OUTGOING ? drop : accept.
func dropOutgoing(fd int) error {
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: skfAdOff + skfAdPkttype},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.PACKET_OUTGOING},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0x40000},
	}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
}
