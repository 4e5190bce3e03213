// One GET with java.net.http.HttpClient over HTTP/1.1, for clients_test.go.
// Usage: java JavaClient.java <url> <timeout-ms, 0 for none>
// Prints one JSON line: {status, body, error, ms}; ms is the time the
// request took, without the JVM's start.
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;

public class JavaClient {
    public static void main(String[] args) {
        long timeoutMs = Long.parseLong(args[1]);
        // HTTP/1.1: the default HTTP_2 would try an h2c upgrade on http URLs.
        HttpClient client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
        HttpRequest.Builder req = HttpRequest.newBuilder(URI.create(args[0]));
        if (timeoutMs > 0) {
            // The time to wait for the response headers.
            req.timeout(Duration.ofMillis(timeoutMs));
        }
        String out;
        long start = System.nanoTime();
        try {
            HttpResponse<String> res = client.send(req.build(), HttpResponse.BodyHandlers.ofString());
            out = "{\"status\":" + res.statusCode() + ",\"body\":" + quote(res.body());
        } catch (Exception e) {
            out = "{\"status\":0,\"error\":" + quote(e.toString());
        }
        System.out.println(out + ",\"ms\":" + (System.nanoTime() - start) / 1000000 + "}");
        System.exit(0);
    }

    static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('"').toString();
    }
}
