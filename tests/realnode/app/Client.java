import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.InputStream;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Enumeration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import javax.net.ssl.HttpsURLConnection;
import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

/**
 * An app's outgoing calls, configured the way the Mendix runtime is: the
 * runtime settings ClientCertificates (PKCS12 paths, comma-separated),
 * ClientCertificatePasswords (one per file, same order),
 * ClientCertificateUsages (JSON: endpoint -> path, "" = present no
 * certificate) and CACertificates (PEM files, comma-separated) come from
 * MXRUNTIME_* environment variables, as the Mendix docker buildpack passes
 * them.
 *
 * CALLS lists the URLs the app calls (its REST calls); the certificate for a
 * call is the one pinned to the URL's host name. Each call is mutual TLS
 * with that certificate (none for "" or an unpinned host), trusting only
 * the configured CAs (not the JVM's cacerts), with hostname verification on.
 * The files are read again every round (INTERVAL seconds), so a file that
 * disappears or a password that no longer opens it fails the next call.
 *
 * One line per call:
 *   call round=N endpoint=HOST presented="SUBJECT"|none result=ok answer="..."
 *   call round=N endpoint=HOST presented=... result=error error="..."
 */
public class Client {
    static void log(String s) {
        System.out.println(Instant.now() + " " + s);
        System.out.flush();
    }

    static String env(String name) {
        String v = System.getenv("MXRUNTIME_" + name);
        return v == null ? "" : v;
    }

    static List<String> split(String s) {
        List<String> out = new ArrayList<>();
        if (s.isEmpty()) return out;
        for (String p : s.split(",", -1)) out.add(p);
        return out;
    }

    public static void main(String[] args) throws Exception {
        List<String> calls = split(System.getenv().getOrDefault("CALLS", ""));
        long interval = Long.parseLong(System.getenv().getOrDefault("INTERVAL", "3"));
        log("start ClientCertificates=" + env("ClientCertificates")
                + " ClientCertificateUsages=" + env("ClientCertificateUsages")
                + " CACertificates=" + env("CACertificates")
                + " passwords=" + split(env("ClientCertificatePasswords")).size());
        for (long round = 1; ; round++) {
            for (String url : calls) call(round, url.trim());
            Thread.sleep(interval * 1000);
        }
    }

    static void call(long round, String url) {
        String host = java.net.URI.create(url).getHost();
        String presented = "none";
        try {
            Map<String, String> usages = Json.object(env("ClientCertificateUsages"));
            List<String> files = split(env("ClientCertificates"));
            List<String> passwords = split(env("ClientCertificatePasswords"));
            if (files.size() != passwords.size())
                throw new IllegalStateException(files.size() + " certificates but " + passwords.size() + " passwords");
            String path = usages.get(host);
            KeyManager[] keys = null;
            if (path != null && !path.isEmpty()) {
                int i = files.indexOf(path);
                if (i < 0) throw new IllegalStateException("pinned file " + path + " is not in ClientCertificates");
                KeyStore ks = KeyStore.getInstance("PKCS12");
                char[] pw = passwords.get(i).toCharArray();
                try (InputStream in = new FileInputStream(path)) {
                    ks.load(in, pw);
                }
                X509Certificate cert = null;
                for (Enumeration<String> e = ks.aliases(); e.hasMoreElements(); ) {
                    String alias = e.nextElement();
                    if (ks.isKeyEntry(alias)) cert = (X509Certificate) ks.getCertificate(alias);
                }
                if (cert == null) throw new IllegalStateException(path + " holds no private key");
                presented = "\"" + cert.getSubjectX500Principal().getName() + "\"";
                KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
                kmf.init(ks, pw);
                keys = kmf.getKeyManagers();
            } else if (path == null) {
                presented = "none(unpinned)";
            }
            KeyStore trust = KeyStore.getInstance(KeyStore.getDefaultType());
            trust.load(null, null);
            int n = 0;
            CertificateFactory cf = CertificateFactory.getInstance("X.509");
            for (String ca : split(env("CACertificates"))) {
                try (InputStream in = new FileInputStream(ca.trim())) {
                    for (Certificate c : cf.generateCertificates(in)) trust.setCertificateEntry("ca" + n++, c);
                }
            }
            TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            tmf.init(trust);
            SSLContext ctx = SSLContext.getInstance("TLS");
            ctx.init(keys, tmf.getTrustManagers(), null);
            HttpsURLConnection c = (HttpsURLConnection) new URL(url).openConnection();
            c.setSSLSocketFactory(ctx.getSocketFactory());
            c.setConnectTimeout(5000);
            c.setReadTimeout(5000);
            int code = c.getResponseCode();
            String body;
            try (InputStream in = code < 400 ? c.getInputStream() : c.getErrorStream()) {
                body = in == null ? "" : new String(readAll(in), StandardCharsets.UTF_8).trim();
            }
            log("call round=" + round + " endpoint=" + host + " presented=" + presented
                    + " result=" + (code == 200 ? "ok" : "http" + code) + " answer=\"" + body + "\"");
        } catch (Exception e) {
            Throwable root = e;
            while (root.getCause() != null) root = root.getCause();
            log("call round=" + round + " endpoint=" + host + " presented=" + presented
                    + " result=error error=\"" + e.getClass().getSimpleName() + ": " + e.getMessage()
                    + (root != e ? " / " + root.getClass().getSimpleName() + ": " + root.getMessage() : "")
                    + "\"");
        }
    }

    static byte[] readAll(InputStream in) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buf = new byte[4096];
        for (int r; (r = in.read(buf)) > 0; ) out.write(buf, 0, r);
        return out.toByteArray();
    }

    /** Just enough JSON for ClientCertificateUsages: an object of strings. */
    static final class Json {
        final String s;
        int i;

        Json(String s) {
            this.s = s;
        }

        static Map<String, String> object(String text) {
            Map<String, String> out = new LinkedHashMap<>();
            if (text.isBlank()) return out;
            Json j = new Json(text);
            j.expect('{');
            if (j.peek() == '}') return out;
            do {
                String k = j.string();
                j.expect(':');
                out.put(k, j.string());
            } while (j.next(',', '}') == ',');
            return out;
        }

        char peek() {
            while (Character.isWhitespace(s.charAt(i))) i++;
            return s.charAt(i);
        }

        void expect(char c) {
            if (peek() != c) throw new IllegalArgumentException("ClientCertificateUsages: expected " + c + " at " + i);
            i++;
        }

        char next(char a, char b) {
            char c = peek();
            if (c != a && c != b) throw new IllegalArgumentException("ClientCertificateUsages: unexpected " + c);
            i++;
            return c;
        }

        String string() {
            expect('"');
            StringBuilder b = new StringBuilder();
            for (char c; (c = s.charAt(i++)) != '"'; ) {
                if (c == '\\') {
                    char e = s.charAt(i++);
                    switch (e) {
                        case 'n': b.append('\n'); break;
                        case 't': b.append('\t'); break;
                        case 'r': b.append('\r'); break;
                        case 'b': b.append('\b'); break;
                        case 'f': b.append('\f'); break;
                        case 'u': b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break;
                        default: b.append(e);
                    }
                } else b.append(c);
            }
            return b.toString();
        }
    }
}
