// The benchmark's Java service: com.sun.net.httpserver with a fixed pool of THREADS threads
// (default 16), which do the sockets' reads and writes.
//   GET /hello -> "hello\n"
//   GET /work  -> WORK_ITERATIONS rounds of SHA-256 over 1 KiB (CPU work, no sleep), the digest in hex
// Usage: java BenchServer [PORT]  (or env PORT; 0 = ephemeral). Prints "LISTENING <port>".
// CALIBRATE_US=<us>: print "ITERATIONS <n>" (n rounds take about that long here) and exit.
// SIGTERM runs the JVM's shutdown hooks (an agent flushes its spans) and exits.

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.concurrent.Executors;

public class BenchServer {
    static final byte[] BLOCK = new byte[1024];
    static final byte[] HELLO = "hello\n".getBytes(StandardCharsets.US_ASCII);
    static final ThreadLocal<MessageDigest> SHA256 = ThreadLocal.withInitial(() -> {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    });

    /** n rounds of SHA-256, each over 1 KiB and the previous digest. */
    static byte[] work(int n) {
        MessageDigest md = SHA256.get();
        byte[] digest = new byte[32];
        for (int i = 0; i < n; i++) {
            md.update(BLOCK);
            md.update(digest);
            digest = md.digest();
        }
        return digest;
    }

    /** Rounds that take about us microseconds: the fastest of several timed batches (after warm-up). */
    static int calibrate(double us) {
        for (int i = 0; i < 10; i++) work(20000);
        double best = Double.MAX_VALUE;
        for (int i = 0; i < 7; i++) {
            long t0 = System.nanoTime();
            work(5000);
            best = Math.min(best, (System.nanoTime() - t0) / 1000.0 / 5000);
        }
        return (int) Math.max(1, Math.round(us / best));
    }

    public static void main(String[] args) throws IOException {
        String calibrateUs = System.getenv("CALIBRATE_US");
        if (calibrateUs != null) {
            System.out.println("ITERATIONS " + calibrate(Double.parseDouble(calibrateUs)));
            return;
        }
        int iterations = Integer.parseInt(System.getenv().getOrDefault("WORK_ITERATIONS", "100"));
        int threads = Integer.parseInt(System.getenv().getOrDefault("THREADS", "16"));
        String portArg = args.length > 0 ? args[0] : System.getenv().getOrDefault("PORT", "0");
        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", Integer.parseInt(portArg)), 1024);
        server.createContext("/hello", ex -> send(ex, 200, HELLO));
        server.createContext("/work", ex -> send(ex, 200,
                (HexFormat.of().formatHex(work(iterations)) + "\n").getBytes(StandardCharsets.US_ASCII)));
        server.setExecutor(Executors.newFixedThreadPool(threads));
        server.start();
        System.out.println("LISTENING " + server.getAddress().getPort());
        System.out.flush();
    }

    static void send(HttpExchange ex, int status, byte[] body) throws IOException {
        try (ex) {
            ex.getResponseHeaders().set("Content-Type", "text/plain");
            ex.sendResponseHeaders(status, body.length);
            try (OutputStream out = ex.getResponseBody()) {
                out.write(body);
            }
        }
    }
}
