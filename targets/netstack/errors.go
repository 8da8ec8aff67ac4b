package main

import (
	"reflect"
	"unsafe"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// errnoNames: the tcpip.Error each call can return, and the errno a socket
// API gives for it. It is the table of gVisor's own socket layer
// (pkg/syserr/netstack.go, TranslateNetstackError), which turns the same
// errors into the errno a sandboxed program sees; written out here so that
// it can be read next to the protocol's names. ErrClosedForReceive is end
// of file (recv answers n=0), never an error reply.
var errnoNames = map[reflect.Type]string{
	reflect.TypeOf(&tcpip.ErrUnknownProtocol{}):              "EINVAL",
	reflect.TypeOf(&tcpip.ErrUnknownNICID{}):                 "ENODEV",
	reflect.TypeOf(&tcpip.ErrUnknownDevice{}):                "ENODEV",
	reflect.TypeOf(&tcpip.ErrUnknownProtocolOption{}):        "ENOPROTOOPT",
	reflect.TypeOf(&tcpip.ErrDuplicateNICID{}):               "EEXIST",
	reflect.TypeOf(&tcpip.ErrDuplicateAddress{}):             "EEXIST",
	reflect.TypeOf(&tcpip.ErrHostUnreachable{}):              "EHOSTUNREACH",
	reflect.TypeOf(&tcpip.ErrHostDown{}):                     "EHOSTDOWN",
	reflect.TypeOf(&tcpip.ErrNoNet{}):                        "ENONET",
	reflect.TypeOf(&tcpip.ErrAlreadyBound{}):                 "EINVAL",
	reflect.TypeOf(&tcpip.ErrInvalidEndpointState{}):         "EINVAL",
	reflect.TypeOf(&tcpip.ErrAlreadyConnecting{}):            "EALREADY",
	reflect.TypeOf(&tcpip.ErrAlreadyConnected{}):             "EISCONN",
	reflect.TypeOf(&tcpip.ErrNoPortAvailable{}):              "EAGAIN",
	reflect.TypeOf(&tcpip.ErrPortInUse{}):                    "EADDRINUSE",
	reflect.TypeOf(&tcpip.ErrBadLocalAddress{}):              "EADDRNOTAVAIL",
	reflect.TypeOf(&tcpip.ErrClosedForSend{}):                "EPIPE",
	reflect.TypeOf(&tcpip.ErrWouldBlock{}):                   "EAGAIN",
	reflect.TypeOf(&tcpip.ErrConnectionRefused{}):            "ECONNREFUSED",
	reflect.TypeOf(&tcpip.ErrTimeout{}):                      "ETIMEDOUT",
	reflect.TypeOf(&tcpip.ErrAborted{}):                      "EPIPE",
	reflect.TypeOf(&tcpip.ErrConnectStarted{}):               "EINPROGRESS",
	reflect.TypeOf(&tcpip.ErrDestinationRequired{}):          "EDESTADDRREQ",
	reflect.TypeOf(&tcpip.ErrNotSupported{}):                 "EOPNOTSUPP",
	reflect.TypeOf(&tcpip.ErrQueueSizeNotSupported{}):        "ENOTTY",
	reflect.TypeOf(&tcpip.ErrNotConnected{}):                 "ENOTCONN",
	reflect.TypeOf(&tcpip.ErrConnectionReset{}):              "ECONNRESET",
	reflect.TypeOf(&tcpip.ErrConnectionAborted{}):            "ECONNABORTED",
	reflect.TypeOf(&tcpip.ErrNoSuchFile{}):                   "ENOENT",
	reflect.TypeOf(&tcpip.ErrInvalidOptionValue{}):           "EINVAL",
	reflect.TypeOf(&tcpip.ErrBadAddress{}):                   "EFAULT",
	reflect.TypeOf(&tcpip.ErrNetworkUnreachable{}):           "ENETUNREACH",
	reflect.TypeOf(&tcpip.ErrMessageTooLong{}):               "EMSGSIZE",
	reflect.TypeOf(&tcpip.ErrNoBufferSpace{}):                "ENOBUFS",
	reflect.TypeOf(&tcpip.ErrBroadcastDisabled{}):            "EACCES",
	reflect.TypeOf(&tcpip.ErrNotPermitted{}):                 "EPERM",
	reflect.TypeOf(&tcpip.ErrAddressFamilyNotSupported{}):    "EAFNOSUPPORT",
	reflect.TypeOf(&tcpip.ErrBadBuffer{}):                    "EFAULT",
	reflect.TypeOf(&tcpip.ErrMalformedHeader{}):              "EINVAL",
	reflect.TypeOf(&tcpip.ErrInvalidPortRange{}):             "EINVAL",
	reflect.TypeOf(&tcpip.ErrMulticastInputCannotBeOutput{}): "EINVAL",
	reflect.TypeOf(&tcpip.ErrMissingRequiredFields{}):        "EINVAL",
	reflect.TypeOf(&tcpip.ErrEndpointBusy{}):                 "EBUSY",
}

// fail turns a tcpip.Error into the reply's error: its errno name, and the
// stack's own message as msg.
func fail(terr tcpip.Error) error {
	if terr == nil {
		return nil
	}
	name, ok := errnoNames[reflect.TypeOf(terr)]
	if !ok {
		name = "noerrno"
	}
	return &errnoErr{name, terr.String()}
}

var errTimeout = &errnoErr{"timeout", "the call's own timeout expired"}

func unsafePointer[T any](p *T) unsafe.Pointer { return unsafe.Pointer(p) }
