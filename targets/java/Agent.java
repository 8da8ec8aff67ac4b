/* Java target agent: executes socket calls on command, see targets/PROTOCOL.md.
 *
 * It uses java.nio.channels the way a Java program would and reports what they
 * returned: ServerSocketChannel, SocketChannel and DatagramChannel, with
 * StandardSocketOptions; a Selector for an operation's own timeout (MS) and
 * configureBlocking for `nonblock`. No test logic lives here. JDK only.
 *
 * What Java cannot express is answered `unsupported`:
 * - A TCP socket's class (server or client) is chosen when it is opened, and a
 *   ServerSocketChannel binds and listens in one call (bind(addr, backlog)). So
 *   `socket tcp` opens nothing yet, `bind` is recorded (`ok deferred=1`), options
 *   are kept until the channel exists, `listen` opens a ServerSocketChannel and
 *   `connect` a SocketChannel (bound first if `bind` came). Bind errors show at
 *   listen or connect. A socket that is only bound can be a SocketChannel:
 *   `getsockname` on a handle that was bound and neither listened nor connected
 *   opens and binds one (then `listen` on it is unsupported).
 * - No TCP_SYNCNT or TCP_USER_TIMEOUT (neither StandardSocketOptions nor
 *   jdk.net.ExtendedSocketOptions has them); no SO_LINGER on a
 *   ServerSocketChannel or DatagramChannel; no shutdown of a DatagramChannel.
 *
 * Exceptions carry no errno: the errno name comes from the exception's text
 * when it is the C library's strerror text (the JDK throws that for a failed
 * system call), from a few JDK texts and classes that stand for one errno
 * ("Connection reset", PortUnreachableException), else `noerrno` with the
 * exception as msg: so are the JDK's own checks made before any system call
 * (ClosedChannelException, NotYetConnectedException, AlreadyConnectedException,
 * ...). A non-blocking accept or receive that returns null, a read or write
 * that returns 0, is EAGAIN; a non-blocking connect that returns false is
 * EINPROGRESS. A SocketChannel whose connect is pending (non-blocking, or timed
 * out) is finished with finishConnect before send, recv, shutdown, getpeername.
 *
 * Build (-XDstringConcat=inline: no invokedynamic string concatenation, about
 * 100 ms less CPU at start):
 *   javac -Xlint:all -Werror -XDstringConcat=inline -d classes Agent.java
 *   jar --create --main-class Agent --file agent.jar -C classes .
 * Run (-Xint: no JIT compiler threads to start; -XX:-UsePerfData: no
 * /tmp/hsperfdata file; -Xlog: the JVM's own warnings go to stderr, never into
 * the replies on stdout; the harness adds -XX:SharedArchiveFile=, an archive of
 * these classes made once with -XX:ArchiveClassesAtExit, conformance/targets.py):
 *   java -Xint -XX:+UseSerialGC -XX:-UsePerfData -Xshare:auto
 *        -Xlog:disable -Xlog:all=warning:stderr -cp agent.jar Agent
 */
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.math.BigInteger;
import java.net.Inet6Address;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.NetworkInterface;
import java.net.PortUnreachableException;
import java.net.ProtocolFamily;
import java.net.SocketAddress;
import java.net.SocketTimeoutException;
import java.net.StandardProtocolFamily;
import java.net.StandardSocketOptions;
import java.nio.ByteBuffer;
import java.nio.channels.DatagramChannel;
import java.nio.channels.NetworkChannel;
import java.nio.channels.SelectableChannel;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;

public final class Agent {
    static final int MAX_LINE = 4096;    // bytes in a command line, its newline not counted
    static final int MAX_RECV = 1 << 20;
    static final long NONE = -1;         // MS = none

    /** The command itself is wrong: reply `proto CODE`. */
    @SuppressWarnings("serial")
    static final class Proto extends Exception {
        final String code;
        Proto(String code, String msg) { super(msg, null, false, false); this.code = code; }
    }

    /** Java's socket API cannot express it: reply `unsupported`. */
    @SuppressWarnings("serial")
    static final class Unsupported extends Exception {
        Unsupported(String msg) { super(msg, null, false, false); }
    }

    /** An errno the agent names from what the API returned (null, 0, false) rather than from an exception. */
    @SuppressWarnings("serial")
    static final class Errno extends Exception {
        final String name;
        Errno(String name, String msg) { super(msg, null, false, false); this.name = name; }
    }

    /** The operation's own timeout (MS) expired: the Selector returned nothing in time. */
    @SuppressWarnings("serial")
    static final class Timeout extends Exception {
        Timeout() { super("timed out", null, false, false); }
    }

    /** One handle. A TCP handle has no channel until listen or connect (see the top). */
    static final class Sock {
        final boolean tcp, inet6;
        ServerSocketChannel server;
        SocketChannel conn;
        DatagramChannel dgram;
        InetSocketAddress bindAddr;                          // recorded bind of a TCP handle with no channel yet
        final Map<String, int[]> pending = new LinkedHashMap<>();  // options set before the channel exists

        Sock(boolean tcp, boolean inet6) { this.tcp = tcp; this.inet6 = inet6; }

        SelectableChannel channel() {
            return server != null ? server : conn != null ? conn : dgram;
        }

        ProtocolFamily family() { return inet6 ? StandardProtocolFamily.INET6 : StandardProtocolFamily.INET; }
    }

    final Map<Integer, Sock> socks = new HashMap<>();
    int next = 1;
    Selector selector;  // for MS; a channel is registered only during one call
    long t0, t1;        // ns, around the socket call(s)

    void begin() { t0 = System.nanoTime(); }
    void end() { t1 = System.nanoTime(); }

    // ---- argument parsing ----

    /** A decimal integer in [lo, hi], as Python's int(text, 10) reads it (sign, single underscores between digits). */
    static long number(String text, long lo, long hi) throws Proto {
        String digits = text;
        if (digits.startsWith("+") || digits.startsWith("-")) digits = digits.substring(1);
        boolean ok = !digits.isEmpty();
        for (int i = 0; ok && i < digits.length(); i++) {
            char c = digits.charAt(i);
            if (c == '_') {
                ok = i > 0 && i < digits.length() - 1 && isDigit(digits.charAt(i - 1)) && isDigit(digits.charAt(i + 1));
            } else {
                ok = isDigit(c);
            }
        }
        if (!ok) throw new Proto("badarg", "not a number: " + text);
        BigInteger v = new BigInteger(text.replace("_", "").replace("+", ""));
        if (v.compareTo(BigInteger.valueOf(lo)) < 0 || v.compareTo(BigInteger.valueOf(hi)) > 0) {
            throw new Proto("badarg", "out of range: " + text);
        }
        return v.longValue();
    }

    static boolean isDigit(char c) { return c >= '0' && c <= '9'; }

    static long timeoutMs(String text) throws Proto {
        return text.equals("none") ? NONE : number(text, 1, Integer.MAX_VALUE);
    }

    Sock handle(String text) throws Proto {
        int h = (int) number(text, 0, Integer.MAX_VALUE);
        Sock s = socks.get(h);
        if (s == null) throw new Proto("badhandle", "no handle " + text);
        return s;
    }

    static byte[] unhex(String text) throws Proto {
        if (text.equals("-")) return new byte[0];
        if (text.length() % 2 != 0) throw new Proto("badarg", "bad hex");
        byte[] out = new byte[text.length() / 2];
        for (int i = 0; i < out.length; i++) {
            int hi = Character.digit(text.charAt(2 * i), 16), lo = Character.digit(text.charAt(2 * i + 1), 16);
            if (hi < 0 || lo < 0) throw new Proto("badarg", "bad hex");
            out[i] = (byte) (hi << 4 | lo);
        }
        return out;
    }

    /** PORT, then ADDR as inet_pton(3) reads it for the handle's family: numeric only, never a name lookup. */
    static InetSocketAddress sockaddr(Sock s, String addr, String port) throws Proto {
        int p = (int) number(port, 0, 65535);
        byte[] raw = s.inet6 ? ptonV6(addr) : ptonV4(addr);
        if (raw == null) throw new Proto("badarg", "bad address " + addr);
        try {
            InetAddress ia = s.inet6 ? Inet6Address.getByAddress(null, raw, -1) : InetAddress.getByAddress(raw);
            return new InetSocketAddress(ia, p);
        } catch (IOException e) {
            throw new Proto("badarg", "bad address " + addr);
        }
    }

    /** glibc's inet_pton4: four decimal octets, no leading zeros. */
    static byte[] ptonV4(String src) {
        byte[] out = new byte[4];
        int octets = 0, cur = 0;
        boolean sawDigit = false;
        for (int i = 0; i < src.length(); i++) {
            char c = src.charAt(i);
            if (isDigit(c)) {
                int v = cur * 10 + (c - '0');
                if (sawDigit && cur == 0) return null;
                if (v > 255) return null;
                cur = v;
                if (!sawDigit) {
                    if (++octets > 4) return null;
                    sawDigit = true;
                }
            } else if (c == '.' && sawDigit) {
                if (octets == 4) return null;
                out[octets - 1] = (byte) cur;
                cur = 0;
                sawDigit = false;
            } else {
                return null;
            }
        }
        if (octets < 4 || !sawDigit) return null;
        out[3] = (byte) cur;
        return out;
    }

    /** glibc's inet_pton6. */
    static byte[] ptonV6(String src) {
        byte[] tmp = new byte[16];
        int tp = 0, colonp = -1, i = 0, digits = 0, val = 0, curtok;
        if (src.startsWith(":")) {
            if (!src.startsWith("::")) return null;
            i = 1;
        }
        curtok = i;
        while (i < src.length()) {
            char c = Character.toLowerCase(src.charAt(i++));
            int d = Character.digit(c, 16);
            if (d >= 0 && c < 0x80) {
                val = val << 4 | d;
                if (++digits > 4) return null;
                continue;
            }
            if (c == ':') {
                curtok = i;
                if (digits == 0) {
                    if (colonp >= 0) return null;
                    colonp = tp;
                    continue;
                } else if (i == src.length()) {
                    return null;
                }
                if (tp + 2 > 16) return null;
                tmp[tp++] = (byte) (val >> 8);
                tmp[tp++] = (byte) val;
                digits = 0;
                val = 0;
                continue;
            }
            if (c == '.' && tp + 4 <= 16) {
                byte[] v4 = ptonV4(src.substring(curtok));
                if (v4 == null) return null;
                System.arraycopy(v4, 0, tmp, tp, 4);
                tp += 4;
                digits = 0;
                break;
            }
            return null;
        }
        if (digits > 0) {
            if (tp + 2 > 16) return null;
            tmp[tp++] = (byte) (val >> 8);
            tmp[tp++] = (byte) val;
        }
        if (colonp >= 0) {
            if (tp == 16) return null;
            int n = tp - colonp;
            for (int k = 1; k <= n; k++) {
                tmp[16 - k] = tmp[colonp + n - k];
                tmp[colonp + n - k] = 0;
            }
            tp = 16;
        }
        return tp == 16 ? tmp : null;
    }

    // ---- reply fields ----

    /** ADDR as inet_ntop(3) writes it; on an inet6 handle an IPv4 address (Java unmaps them) is ::ffff:a.b.c.d. */
    static String ntop(Sock s, InetAddress a) {
        byte[] b = a.getAddress();
        if (b.length == 4 && !s.inet6) {
            return (b[0] & 255) + "." + (b[1] & 255) + "." + (b[2] & 255) + "." + (b[3] & 255);
        }
        if (b.length == 4) {
            byte[] m = new byte[16];
            m[10] = m[11] = (byte) 0xff;
            System.arraycopy(b, 0, m, 12, 4);
            b = m;
        }
        int[] w = new int[8];
        for (int i = 0; i < 8; i++) w[i] = (b[2 * i] & 255) << 8 | (b[2 * i + 1] & 255);
        int bestBase = -1, bestLen = 0, curBase = -1, curLen = 0;
        for (int i = 0; i < 8; i++) {
            if (w[i] == 0) {
                if (curBase < 0) { curBase = i; curLen = 1; } else curLen++;
            } else if (curBase >= 0) {
                if (bestBase < 0 || curLen > bestLen) { bestBase = curBase; bestLen = curLen; }
                curBase = -1;
            }
        }
        if (curBase >= 0 && (bestBase < 0 || curLen > bestLen)) { bestBase = curBase; bestLen = curLen; }
        if (bestBase >= 0 && bestLen < 2) bestBase = -1;
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < 8; i++) {
            if (bestBase >= 0 && i >= bestBase && i < bestBase + bestLen) {
                if (i == bestBase) out.append(':');
                continue;
            }
            if (i != 0) out.append(':');
            if (i == 6 && bestBase == 0 && (bestLen == 6 || (bestLen == 5 && w[5] == 0xffff))) {
                out.append(b[12] & 255).append('.').append(b[13] & 255).append('.')
                   .append(b[14] & 255).append('.').append(b[15] & 255);
                return scoped(out, a);
            }
            out.append(Integer.toHexString(w[i]));
        }
        if (bestBase >= 0 && bestBase + bestLen == 8) out.append(':');
        return scoped(out, a);
    }

    static String scoped(StringBuilder out, InetAddress a) {
        if (a instanceof Inet6Address && ((Inet6Address) a).getScopeId() != 0) {  // like getnameinfo: fe80::1%eth0
            NetworkInterface nif = ((Inet6Address) a).getScopedInterface();
            out.append('%').append(nif != null ? nif.getName() : String.valueOf(((Inet6Address) a).getScopeId()));
        }
        return out.toString();
    }

    static String addrFields(Sock s, SocketAddress sa) throws Errno {
        if (sa == null) throw new Errno("noerrno", "the channel returned no address (null): not bound or not connected");
        InetSocketAddress isa = (InetSocketAddress) sa;
        return " addr=" + ntop(s, isa.getAddress()) + " port=" + isa.getPort();
    }

    String addHandle(Sock s) {
        int h = next++;
        socks.put(h, s);
        return " h=" + h;
    }

    // ---- an operation's own timeout ----

    interface Call<T> { T run() throws IOException, Errno; }

    /**
     * Make CALL as MS asks. On a non-blocking channel it is made once (null, 0 or false: `err WOULD`). With
     * `none` it is made once, blocking. Otherwise the channel is non-blocking and registered with the Selector
     * meanwhile, CALL made until it does not return null/0/false or MS has passed (`timeout`); then the key is
     * cancelled and flushed (a registered channel cannot be made blocking, and would not close at once) and
     * the channel made blocking again.
     */
    <T> T timed(SelectableChannel ch, int ops, long ms, String would, Call<T> call) throws Exception {
        if (!ch.isBlocking()) {
            T r = call.run();
            if (wouldBlock(r)) throw new Errno(would, "the non-blocking call returned " + r);
            return r;
        }
        if (ms == NONE) return call.run();
        if (selector == null) selector = Selector.open();
        long deadline = System.nanoTime() + ms * 1_000_000L;
        ch.configureBlocking(false);
        SelectionKey key = null;
        try {
            key = ch.register(selector, ops);
            for (;;) {
                T r = call.run();
                if (!wouldBlock(r)) return r;
                long left = deadline - System.nanoTime();
                if (left <= 0) throw new Timeout();
                selector.select((left + 999_999) / 1_000_000);  // never 0: select(0) waits for ever
                selector.selectedKeys().clear();
            }
        } finally {
            if (key != null) {
                key.cancel();
                selector.selectNow();
            }
            if (ch.isOpen()) ch.configureBlocking(true);
        }
    }

    static boolean wouldBlock(Object r) {
        return r == null || Boolean.FALSE.equals(r) || (r instanceof Integer && (Integer) r == 0);
    }

    // ---- commands: each returns the ok reply's fields ----

    String opSocket(String kind, String family) throws Exception {
        boolean inet6 = keyword(family, "inet", "inet6") == 1;
        boolean tcp = keyword(kind, "tcp", "udp") == 0;
        Sock s = new Sock(tcp, inet6);
        begin();  // TCP: no system call yet (elapsed 0)
        if (!tcp) s.dgram = DatagramChannel.open(s.family());
        end();
        return addHandle(s);
    }

    static int keyword(String text, String... table) throws Proto {
        for (int i = 0; i < table.length; i++) if (table[i].equals(text)) return i;
        throw new Proto("badarg", "unknown keyword " + text);
    }

    static final Map<String, Integer> OPTIONS = Map.of(
        "reuseaddr", 1, "linger", 2, "syncnt", 1, "user_timeout", 1, "nonblock", 1);

    static String option(String name) throws Proto {
        if (!OPTIONS.containsKey(name)) throw new Proto("badarg", "unknown option " + name);
        return name;
    }

    static void noKernelOption(String name) throws Unsupported {
        if (name.equals("syncnt") || name.equals("user_timeout")) {
            throw new Unsupported("Java has no " + (name.equals("syncnt") ? "TCP_SYNCNT" : "TCP_USER_TIMEOUT")
                + " (neither StandardSocketOptions nor jdk.net.ExtendedSocketOptions)");
        }
    }

    String opSetsockopt(String h, String name, String[] values) throws Exception {
        Sock s = handle(h);
        option(name);
        int want = OPTIONS.get(name);
        if (values.length != want) throw new Proto("badline", name + " takes " + want + " value(s)");
        int[] v = new int[values.length];
        for (int i = 0; i < v.length; i++) v[i] = (int) number(values[i], 0, Integer.MAX_VALUE);
        noKernelOption(name);
        SelectableChannel ch = s.channel();
        if (ch == null) {  // applied when listen or connect opens the channel
            s.pending.put(name, v);
            return "";
        }
        begin();
        setopt(ch, name, v);
        end();
        return "";
    }

    static void setopt(SelectableChannel ch, String name, int[] v) throws IOException, Unsupported {
        NetworkChannel nc = (NetworkChannel) ch;
        try {
            switch (name) {
                case "reuseaddr": nc.setOption(StandardSocketOptions.SO_REUSEADDR, v[0] != 0); break;
                case "linger": nc.setOption(StandardSocketOptions.SO_LINGER, v[0] != 0 ? v[1] : -1); break;
                default: ch.configureBlocking(v[0] == 0); break;
            }
        } catch (UnsupportedOperationException e) {
            throw new Unsupported(unsupportedOption(ch, name));
        }
    }

    static String unsupportedOption(SelectableChannel ch, String name) {
        String cls = ch instanceof ServerSocketChannel ? "ServerSocketChannel" : "DatagramChannel";
        return "a Java " + cls + " has no " + (name.equals("linger") ? "SO_LINGER" : name);
    }

    String opGetsockopt(String h, String name) throws Exception {
        Sock s = handle(h);
        option(name);
        noKernelOption(name);
        SelectableChannel ch = s.channel();
        if (ch == null) {
            // What the channel will read back once the option is applied: Java's SO_LINGER is one int (-1: off).
            int[] v = s.pending.get(name);
            if (v != null) return " value=" + (name.equals("linger") ? (v[0] != 0 ? "1," + v[1] : "0,0") : v[0] != 0 ? "1" : "0");
            if (name.equals("nonblock")) return " value=0";  // every Java channel opens blocking
            throw new Unsupported(notYet());
        }
        NetworkChannel nc = (NetworkChannel) ch;
        String value;
        begin();
        try {
            switch (name) {
                case "reuseaddr": value = nc.getOption(StandardSocketOptions.SO_REUSEADDR) ? "1" : "0"; break;
                case "linger": {
                    int l = nc.getOption(StandardSocketOptions.SO_LINGER);  // -1: off
                    value = l < 0 ? "0,0" : "1," + l;
                    break;
                }
                default: value = ch.isBlocking() ? "0" : "1"; break;
            }
        } catch (UnsupportedOperationException e) {
            throw new Unsupported(unsupportedOption(ch, name));
        }
        end();
        return " value=" + value;
    }

    static String notYet() {
        return "no socket yet: Java opens a TCP socket as a ServerSocketChannel (at listen) or a SocketChannel "
            + "(at connect, or getsockname after bind)";
    }

    String opBind(String h, String addr, String port) throws Exception {
        Sock s = handle(h);
        InetSocketAddress local = sockaddr(s, addr, port);
        SelectableChannel ch = s.channel();
        if (ch == null) {  // TCP: a ServerSocketChannel binds only together with listen
            s.bindAddr = local;
            return " deferred=1";
        }
        begin();
        ((NetworkChannel) ch).bind(local);
        end();
        return "";
    }

    /** Open the TCP handle's channel: the pending options, then the recorded bind. On failure it stays unopened. */
    <C extends SelectableChannel & NetworkChannel> C open(Sock s, C ch) throws Exception {
        try {
            for (Map.Entry<String, int[]> o : s.pending.entrySet()) setopt(ch, o.getKey(), o.getValue());
            if (s.bindAddr != null && ch instanceof SocketChannel) ch.bind(s.bindAddr);
            return ch;
        } catch (Exception e) {
            ch.close();
            throw e;
        }
    }

    String opListen(String h, String backlog) throws Exception {
        Sock s = handle(h);
        int n = backlog.equals("default") ? -1 : (int) number(backlog, 0, Integer.MAX_VALUE);
        if (!s.tcp) throw new Unsupported("a Java DatagramChannel has no listen");
        if (s.channel() != null) {
            throw new Unsupported("Java listens only in ServerSocketChannel.bind(addr, backlog), on a new channel; "
                + "this handle is already a " + (s.server != null ? "listening ServerSocketChannel" : "SocketChannel"));
        }
        begin();
        ServerSocketChannel ch = open(s, ServerSocketChannel.open(s.family()));
        try {
            if (n < 0) ch.bind(s.bindAddr); else ch.bind(s.bindAddr, n);  // backlog < 1: Java's default (50)
        } catch (Exception e) {
            ch.close();
            throw e;
        }
        end();
        s.server = ch;
        return "";
    }

    String opAccept(String h, String ms) throws Exception {
        Sock s = handle(h);
        long t = timeoutMs(ms);
        if (s.server == null) {
            if (s.tcp && s.channel() == null) {
                throw new Unsupported("Java has no accept on a socket that does not listen: a ServerSocketChannel "
                    + "binds and listens in one call (bind(addr, backlog)), and until listen this handle is no socket");
            }
            throw new Unsupported("Java has accept only on a ServerSocketChannel");
        }
        begin();
        final ServerSocketChannel server = s.server;
        SocketChannel c = timed(server, SelectionKey.OP_ACCEPT, t, "EAGAIN", new Call<SocketChannel>() {
            public SocketChannel run() throws IOException { return server.accept(); }
        });
        end();
        Sock a = new Sock(true, s.inet6);
        a.conn = c;
        return addHandle(a) + addrFields(a, c.getRemoteAddress());
    }

    String opConnect(String h, String addr, String port, String ms) throws Exception {
        Sock s = handle(h);
        InetSocketAddress remote = sockaddr(s, addr, port);
        long t = timeoutMs(ms);
        if (s.dgram != null) {
            begin();
            s.dgram.connect(remote);
            end();
            return "";
        }
        if (s.server != null) throw new Unsupported("a Java ServerSocketChannel has no connect");
        begin();
        if (s.conn == null) s.conn = open(s, SocketChannel.open(s.family()));
        final SocketChannel c = s.conn;
        // connect, then (timed: once the Selector reports OP_CONNECT) finishConnect
        timed(c, SelectionKey.OP_CONNECT, t, "EINPROGRESS", new Call<Boolean>() {
            boolean started;
            public Boolean run() throws IOException {
                if (started) return c.finishConnect();
                started = true;
                return c.connect(remote);
            }
        });
        end();
        return "";
    }

    /** A SocketChannel whose non-blocking or timed connect is pending is finished (Java's finishConnect) first. */
    static SocketChannel connected(SocketChannel c) throws IOException, Errno {
        if (c.isConnectionPending() && !c.finishConnect()) {
            throw new Errno("EAGAIN", "finishConnect returned false: the connection is still pending");
        }
        return c;
    }

    String opSend(String h, String hex) throws Exception {
        Sock s = handle(h);
        ByteBuffer buf = ByteBuffer.wrap(unhex(hex));
        int n;
        if (s.server != null) throw new Unsupported("a Java ServerSocketChannel has no write");
        if (s.channel() == null) throw new Unsupported(notYet());
        begin();
        if (s.conn != null) {
            n = connected(s.conn).write(buf);
        } else {
            n = s.dgram.write(buf);
        }
        end();
        if (n == 0 && buf.capacity() > 0) throw new Errno("EAGAIN", "the non-blocking write returned 0");
        return " n=" + n;
    }

    String opRecv(String h, String max, String ms) throws Exception {
        Sock s = handle(h);
        ByteBuffer buf = ByteBuffer.allocate((int) number(max, 1, MAX_RECV));
        long t = timeoutMs(ms);
        if (s.server != null) throw new Unsupported("a Java ServerSocketChannel has no read");
        if (s.channel() == null) throw new Unsupported(notYet());
        String from = "";
        begin();
        if (s.conn != null) {
            final SocketChannel c = s.conn;
            int n = timed(c, SelectionKey.OP_READ, t, "EAGAIN", new Call<Integer>() {
                public Integer run() throws IOException, Errno { return connected(c).read(buf); }
            });
            end();
            if (n < 0) return " n=0 data=-";  // end of file
        } else {
            final DatagramChannel d = s.dgram;
            SocketAddress sa = timed(d, SelectionKey.OP_READ, t, "EAGAIN", new Call<SocketAddress>() {
                public SocketAddress run() throws IOException { return d.receive(buf); }
            });
            end();
            from = addrFields(s, sa);
        }
        buf.flip();
        return " n=" + buf.remaining() + " data=" + hex(buf) + from;
    }

    static final char[] HEX = "0123456789abcdef".toCharArray();

    static String hex(ByteBuffer buf) {
        if (!buf.hasRemaining()) return "-";
        StringBuilder out = new StringBuilder(2 * buf.remaining());
        while (buf.hasRemaining()) {
            int b = buf.get() & 255;
            out.append(HEX[b >> 4]).append(HEX[b & 15]);
        }
        return out.toString();
    }

    String opShutdown(String h, String how) throws Exception {
        Sock s = handle(h);
        int k = keyword(how, "rd", "wr", "rdwr");
        if (s.conn == null) {
            if (s.channel() == null) throw new Unsupported(notYet());
            throw new Unsupported("Java has shutdownInput/shutdownOutput only on a SocketChannel");
        }
        begin();
        SocketChannel c = connected(s.conn);
        if (k != 1) c.shutdownInput();   // Java has no SHUT_RDWR: rdwr is both calls
        if (k != 0) c.shutdownOutput();
        end();
        return "";
    }

    String opClose(String h) throws Exception {
        Sock s = handle(h);
        socks.remove((int) number(h, 0, Integer.MAX_VALUE));  // the handle is gone either way
        SelectableChannel ch = s.channel();
        begin();
        if (ch != null) ch.close();
        end();
        return "";
    }

    String opGetsockname(String h) throws Exception {
        Sock s = handle(h);
        SelectableChannel ch = s.channel();
        if (ch == null && s.bindAddr == null) throw new Unsupported(notYet());
        begin();
        if (ch == null) {  // bound, neither listening nor connected: in Java that socket is a SocketChannel, bound
            s.conn = open(s, SocketChannel.open(s.family()));
            ch = s.conn;
        }
        SocketAddress local = ((NetworkChannel) ch).getLocalAddress();
        end();
        return addrFields(s, local);
    }

    String opGetpeername(String h) throws Exception {
        Sock s = handle(h);
        SocketAddress remote;
        if (s.server != null) throw new Unsupported("a Java ServerSocketChannel has no remote address");
        if (s.channel() == null) throw new Unsupported(notYet());
        begin();
        remote = s.conn != null ? connected(s.conn).getRemoteAddress() : s.dgram.getRemoteAddress();
        end();
        return addrFields(s, remote);
    }

    // ---- errno names ----

    /** glibc's strerror(3) texts (glibc 2.36), which the JDK's exceptions carry for a failed system call. */
    static final String[] STRERROR = {
        "EPERM", "Operation not permitted", "ENOENT", "No such file or directory", "ESRCH", "No such process",
        "EINTR", "Interrupted system call", "EIO", "Input/output error", "ENXIO", "No such device or address",
        "E2BIG", "Argument list too long", "ENOEXEC", "Exec format error", "EBADF", "Bad file descriptor",
        "ECHILD", "No child processes", "EAGAIN", "Resource temporarily unavailable", "ENOMEM", "Cannot allocate memory",
        "EACCES", "Permission denied", "EFAULT", "Bad address", "ENOTBLK", "Block device required",
        "EBUSY", "Device or resource busy", "EEXIST", "File exists", "EXDEV", "Invalid cross-device link",
        "ENODEV", "No such device", "ENOTDIR", "Not a directory", "EISDIR", "Is a directory",
        "EINVAL", "Invalid argument", "ENFILE", "Too many open files in system", "EMFILE", "Too many open files",
        "ENOTTY", "Inappropriate ioctl for device", "ETXTBSY", "Text file busy", "EFBIG", "File too large",
        "ENOSPC", "No space left on device", "ESPIPE", "Illegal seek", "EROFS", "Read-only file system",
        "EMLINK", "Too many links", "EPIPE", "Broken pipe", "EDOM", "Numerical argument out of domain",
        "ERANGE", "Numerical result out of range", "EDEADLK", "Resource deadlock avoided",
        "ENAMETOOLONG", "File name too long", "ENOLCK", "No locks available", "ENOSYS", "Function not implemented",
        "ENOTEMPTY", "Directory not empty", "ELOOP", "Too many levels of symbolic links",
        "ENOMSG", "No message of desired type", "EIDRM", "Identifier removed", "ECHRNG", "Channel number out of range",
        "EL2NSYNC", "Level 2 not synchronized", "EL3HLT", "Level 3 halted", "EL3RST", "Level 3 reset",
        "ELNRNG", "Link number out of range", "EUNATCH", "Protocol driver not attached",
        "ENOCSI", "No CSI structure available", "EL2HLT", "Level 2 halted", "EBADE", "Invalid exchange",
        "EBADR", "Invalid request descriptor", "EXFULL", "Exchange full", "ENOANO", "No anode",
        "EBADRQC", "Invalid request code", "EBADSLT", "Invalid slot", "EBFONT", "Bad font file format",
        "ENOSTR", "Device not a stream", "ENODATA", "No data available", "ETIME", "Timer expired",
        "ENOSR", "Out of streams resources", "ENONET", "Machine is not on the network",
        "ENOPKG", "Package not installed", "EREMOTE", "Object is remote", "ENOLINK", "Link has been severed",
        "EADV", "Advertise error", "ESRMNT", "Srmount error", "ECOMM", "Communication error on send",
        "EPROTO", "Protocol error", "EMULTIHOP", "Multihop attempted", "EDOTDOT", "RFS specific error",
        "EBADMSG", "Bad message", "EOVERFLOW", "Value too large for defined data type",
        "ENOTUNIQ", "Name not unique on network", "EBADFD", "File descriptor in bad state",
        "EREMCHG", "Remote address changed", "ELIBACC", "Can not access a needed shared library",
        "ELIBBAD", "Accessing a corrupted shared library", "ELIBSCN", ".lib section in a.out corrupted",
        "ELIBMAX", "Attempting to link in too many shared libraries", "ELIBEXEC", "Cannot exec a shared library directly",
        "EILSEQ", "Invalid or incomplete multibyte or wide character", "ERESTART", "Interrupted system call should be restarted",
        "ESTRPIPE", "Streams pipe error", "EUSERS", "Too many users", "ENOTSOCK", "Socket operation on non-socket",
        "EDESTADDRREQ", "Destination address required", "EMSGSIZE", "Message too long",
        "EPROTOTYPE", "Protocol wrong type for socket", "ENOPROTOOPT", "Protocol not available",
        "EPROTONOSUPPORT", "Protocol not supported", "ESOCKTNOSUPPORT", "Socket type not supported",
        "EOPNOTSUPP", "Operation not supported", "EPFNOSUPPORT", "Protocol family not supported",
        "EAFNOSUPPORT", "Address family not supported by protocol", "EADDRINUSE", "Address already in use",
        "EADDRNOTAVAIL", "Cannot assign requested address", "ENETDOWN", "Network is down",
        "ENETUNREACH", "Network is unreachable", "ENETRESET", "Network dropped connection on reset",
        "ECONNABORTED", "Software caused connection abort", "ECONNRESET", "Connection reset by peer",
        "ENOBUFS", "No buffer space available", "EISCONN", "Transport endpoint is already connected",
        "ENOTCONN", "Transport endpoint is not connected", "ESHUTDOWN", "Cannot send after transport endpoint shutdown",
        "ETOOMANYREFS", "Too many references: cannot splice", "ETIMEDOUT", "Connection timed out",
        "ECONNREFUSED", "Connection refused", "EHOSTDOWN", "Host is down", "EHOSTUNREACH", "No route to host",
        "EALREADY", "Operation already in progress", "EINPROGRESS", "Operation now in progress",
        "ESTALE", "Stale file handle", "EUCLEAN", "Structure needs cleaning", "ENOTNAM", "Not a XENIX named type file",
        "ENAVAIL", "No XENIX semaphores available", "EISNAM", "Is a named type file", "EREMOTEIO", "Remote I/O error",
        "EDQUOT", "Disk quota exceeded", "ENOMEDIUM", "No medium found", "EMEDIUMTYPE", "Wrong medium type",
        "ECANCELED", "Operation canceled", "ENOKEY", "Required key not available", "EKEYEXPIRED", "Key has expired",
        "EKEYREVOKED", "Key has been revoked", "EKEYREJECTED", "Key was rejected by service",
        "EOWNERDEAD", "Owner died", "ENOTRECOVERABLE", "State not recoverable",
        "ERFKILL", "Operation not possible due to RF-kill", "EHWPOISON", "Memory page has hardware error",
    };
    static final Map<String, String> ERRNO_BY_TEXT = new HashMap<>();
    static {
        for (int i = 0; i < STRERROR.length; i += 2) ERRNO_BY_TEXT.put(STRERROR[i + 1], STRERROR[i]);
        // The JDK's own text for ECONNRESET on a read (sun.net.ConnectionResetException).
        ERRNO_BY_TEXT.put("Connection reset", "ECONNRESET");
    }

    static String errnoName(Throwable e) {
        if (e instanceof PortUnreachableException) return "ECONNREFUSED";  // thrown for ECONNREFUSED only
        if (e instanceof SocketTimeoutException) return "timeout";  // a timeout of Java's own (socket adaptors)
        String name = e.getMessage() == null ? null : ERRNO_BY_TEXT.get(e.getMessage());
        return name != null ? name : "noerrno";
    }

    static String describe(Throwable e) {
        String cls = e.getClass().getName();
        return e.getMessage() == null ? cls : cls + ": " + e.getMessage();
    }

    // ---- the line protocol ----

    static final char[] UPPER = "0123456789ABCDEF".toCharArray();

    /** Every byte outside A-Z a-z 0-9 - . _ ~ : / as %XX. */
    static String pct(String text) {
        StringBuilder out = new StringBuilder();
        for (byte b : text.getBytes(StandardCharsets.UTF_8)) {
            int c = b & 255;
            if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || "-._~:/".indexOf(c) >= 0) {
                out.append((char) c);
            } else {
                out.append('%').append(UPPER[c >> 4]).append(UPPER[c & 15]);
            }
        }
        return out.toString();
    }

    /** Python's str.split() on ASCII: space, \t \n \v \f \r and \x1c-\x1f. */
    static String[] split(String line) {
        ArrayList<String> words = new ArrayList<>();
        int i = 0, n = line.length();
        while (i < n) {
            while (i < n && isSpace(line.charAt(i))) i++;
            int start = i;
            while (i < n && !isSpace(line.charAt(i))) i++;
            if (i > start) words.add(line.substring(start, i));
        }
        return words.toArray(new String[0]);
    }

    static boolean isSpace(char c) {
        return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
    }

    static final Map<String, Integer> ARGS = new HashMap<>();
    static {
        String[] table = {"socket", "2", "setsockopt", "2", "getsockopt", "2", "bind", "3", "listen", "2", "accept", "2",
                          "connect", "4", "send", "2", "recv", "3", "shutdown", "2", "close", "1", "getsockname", "1",
                          "getpeername", "1", "quit", "0"};
        for (int i = 0; i < table.length; i += 2) ARGS.put(table[i], Integer.parseInt(table[i + 1]));
    }

    String execute(String[] w) throws Exception {
        switch (w[0]) {
            case "socket": return opSocket(w[1], w[2]);
            case "setsockopt": return opSetsockopt(w[1], w[2], Arrays.copyOfRange(w, 3, w.length));
            case "getsockopt": return opGetsockopt(w[1], w[2]);
            case "bind": return opBind(w[1], w[2], w[3]);
            case "listen": return opListen(w[1], w[2]);
            case "accept": return opAccept(w[1], w[2]);
            case "connect": return opConnect(w[1], w[2], w[3], w[4]);
            case "send": return opSend(w[1], w[2]);
            case "recv": return opRecv(w[1], w[2], w[3]);
            case "shutdown": return opShutdown(w[1], w[2]);
            case "close": return opClose(w[1]);
            case "getsockname": return opGetsockname(w[1]);
            case "getpeername": return opGetpeername(w[1]);
            default: return "";  // quit
        }
    }

    /** One command line (ASCII, at most MAX_LINE bytes) to its reply line. */
    String run(String line) {
        String[] w = split(line);
        try {
            if (w.length == 0) throw new Proto("badline", "empty line");
            Integer nargs = ARGS.get(w[0]);
            if (nargs == null) throw new Proto("badop", "unknown command " + w[0]);
            if (w.length - 1 < nargs || (w.length - 1 > nargs && !w[0].equals("setsockopt"))) {
                throw new Proto("badline", w[0] + " takes " + nargs + " argument(s)");
            }
            t0 = System.nanoTime();
            t1 = -1;
            String fields = execute(w);
            return "ok " + us() + fields;
        } catch (Proto e) {
            return "proto " + e.code + " msg=" + pct(e.getMessage());
        } catch (Unsupported e) {
            return "unsupported " + us() + " msg=" + pct(e.getMessage());
        } catch (Timeout e) {
            return "err timeout " + us() + " msg=" + pct("timed out (the Selector returned no ready key in time)");
        } catch (Errno e) {
            return "err " + e.name + " " + us() + " msg=" + pct(e.getMessage());
        } catch (Exception e) {
            return "err " + errnoName(e) + " " + us() + " msg=" + pct(describe(e));
        }
    }

    long us() {
        return ((t1 < 0 ? System.nanoTime() : t1) - t0) / 1000;
    }

    /** One line's bytes (its newline dropped), or null at EOF; tooLong when it had more than MAX_LINE bytes. */
    static boolean tooLong;

    static byte[] readLine(InputStream in) throws IOException {
        byte[] buf = new byte[MAX_LINE];
        int len = 0, total = 0, c = -1;
        while ((c = in.read()) >= 0 && c != '\n') {
            if (len < MAX_LINE) buf[len++] = (byte) c;
            total++;
        }
        if (c < 0 && total == 0) return null;
        tooLong = total > MAX_LINE;
        return Arrays.copyOf(buf, len);
    }

    public static void main(String[] args) throws Exception {
        OutputStream out = new BufferedOutputStream(new FileOutputStream(FileDescriptor.out), 1 << 16);
        InputStream in = new BufferedInputStream(System.in, 1 << 16);
        Agent agent = new Agent();
        agent.warmUp();
        String version = "java " + System.getProperty("java.runtime.version") + " "
            + System.getProperty("java.vm.name") + " (java.nio.channels; MS by a Selector)";
        write(out, "ready proto=1 lang=java version=" + pct(version) + " pid=" + ProcessHandle.current().pid());
        byte[] raw;
        while ((raw = readLine(in)) != null) {
            boolean ascii = true;
            for (byte b : raw) ascii &= b >= 0;
            String reply;
            String line = new String(raw, StandardCharsets.ISO_8859_1);
            if (tooLong) {
                reply = "proto badline msg=" + pct("line too long");
            } else if (!ascii) {
                reply = "proto badline msg=" + pct("not ASCII");
            } else {
                reply = agent.run(line);
            }
            write(out, reply);
            String[] w = split(line);
            if (reply.startsWith("ok") && w.length > 0 && w[0].equals("quit")) break;
        }
        out.flush();
        System.exit(0);
    }

    /**
     * Before `ready`: load and link what the first calls use, so that their elapsed time is the call's and not
     * the JVM's class loading (tens of ms on a busy machine): an unbound socket of each kind and family, opened
     * and closed at once (nothing reaches the network), a timed call that times out on one of them (the
     * agent's Selector, opened here), the exceptions a failed call throws, and the agent's own command path on
     * a throwaway Agent (no handle of the real one is used).
     */
    void warmUp() throws Exception {
        selector = Selector.open();
        for (StandardProtocolFamily f : new StandardProtocolFamily[] {StandardProtocolFamily.INET,
                                                                       StandardProtocolFamily.INET6}) {
            try {
                ServerSocketChannel.open(f).close();
                SocketChannel.open(f).close();
                DatagramChannel.open(f).close();
            } catch (UnsupportedOperationException | IOException e) {
                // no IPv6 here: nothing to load for it
            }
        }
        try (DatagramChannel d = DatagramChannel.open(StandardProtocolFamily.INET)) {
            timed(d, SelectionKey.OP_READ, 1, "EAGAIN", new Call<Object>() {
                public Object run() { return null; }
            });
        } catch (Timeout e) {
            // as it should
        }
        for (String c : new String[] {"java.net.ConnectException", "java.net.NoRouteToHostException",
                                      "java.net.BindException", "java.net.PortUnreachableException",
                                      "sun.net.ConnectionResetException", "sun.net.util.SocketExceptions"}) {
            try {
                Class.forName(c);
            } catch (ClassNotFoundException e) {
                // another JDK: nothing to preload
            }
        }
        // A TCP connect to a multicast address fails in the kernel at once, before any route or packet (ENETUNREACH).
        Agent scratch = new Agent();
        scratch.selector = selector;
        for (String line : new String[] {"socket tcp inet", "setsockopt 1 reuseaddr 1", "getsockopt 1 nonblock",
                                         "bind 1 127.0.0.1 0", "socket tcp inet6", "bind 2 ::1 0",
                                         "getsockopt 1 syncnt", "bogus", "close 1", "close 2",
                                         "socket tcp inet6", "connect 3 ff02::1 9 1000", "close 3",
                                         "socket tcp inet6", "connect 4 ff02::1 9 none", "close 4",
                                         "socket tcp inet6", "setsockopt 5 nonblock 1", "connect 5 ff02::1 9 none",
                                         "close 5"}) {
            scratch.run(line);
        }
        errnoName(new java.net.ConnectException("Connection refused"));
        describe(new IOException());
    }

    static void write(OutputStream out, String line) throws IOException {
        out.write((line + "\n").getBytes(StandardCharsets.ISO_8859_1));
        out.flush();
    }
}
