import com.sun.net.httpserver.HttpsConfigurator;
import com.sun.net.httpserver.HttpsExchange;
import com.sun.net.httpserver.HttpsParameters;
import com.sun.net.httpserver.HttpsServer;
import java.io.FileInputStream;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.time.Instant;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLPeerUnverifiedException;
import javax.net.ssl.TrustManagerFactory;

/**
 * Partners' HTTPS services: each asks for a client certificate and trusts
 * only its own client CA. It answers every request with the subject of the
 * certificate the caller presented ("subject=..." or "subject=none") and
 * logs the same: "partner NAME saw subject=...".
 *
 * PARTNERS lists them, comma-separated, each NAME:PORT:SERVER_P12:CLIENT_CA:AUTH
 * (SERVER_P12: its own certificate, password SERVER_P12_PASSWORD; CLIENT_CA:
 * PEM, the only issuer of client certificates it accepts; AUTH: need, the
 * handshake fails without a certificate, or want, optional). They listen on
 * BIND (default 127.0.0.1), one JVM for all.
 */
public class Partner {
    static String env(String k, String d) {
        String v = System.getenv(k);
        return v == null || v.isEmpty() ? d : v;
    }

    public static void main(String[] args) throws Exception {
        for (String spec : env("PARTNERS", "").split(",")) {
            if (spec.isBlank()) continue;
            String[] f = spec.trim().split(":");
            serve(f[0], Integer.parseInt(f[1]), f[2], f[3], !f[4].equals("want"));
        }
    }

    static void serve(String name, int port, String serverP12, String clientCa, boolean need) throws Exception {
        char[] pw = env("SERVER_P12_PASSWORD", "").toCharArray();
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try (InputStream in = new FileInputStream(serverP12)) {
            ks.load(in, pw);
        }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(ks, pw);
        KeyStore trust = KeyStore.getInstance(KeyStore.getDefaultType());
        trust.load(null, null);
        int n = 0;
        try (InputStream in = new FileInputStream(clientCa)) {
            for (Certificate c : CertificateFactory.getInstance("X.509").generateCertificates(in))
                trust.setCertificateEntry("ca" + n++, c);
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);

        HttpsServer server = HttpsServer.create(new InetSocketAddress(env("BIND", "127.0.0.1"), port), 16);
        server.setHttpsConfigurator(new HttpsConfigurator(ctx) {
            @Override
            public void configure(HttpsParameters p) {
                SSLParameters sp = ctx.getDefaultSSLParameters();
                if (need) sp.setNeedClientAuth(true);
                else sp.setWantClientAuth(true);
                p.setSSLParameters(sp);
            }
        });
        server.createContext("/", x -> {
            String subject = "none";
            try {
                Certificate[] chain = ((HttpsExchange) x).getSSLSession().getPeerCertificates();
                subject = ((X509Certificate) chain[0]).getSubjectX500Principal().getName();
            } catch (SSLPeerUnverifiedException e) {
                // no client certificate (only possible with AUTH want)
            }
            System.out.println(Instant.now() + " partner " + name + " saw subject=" + subject);
            System.out.flush();
            byte[] body = ("subject=" + subject).getBytes(StandardCharsets.UTF_8);
            x.sendResponseHeaders(200, body.length);
            x.getResponseBody().write(body);
            x.close();
        });
        server.start();
        System.out.println(Instant.now() + " partner " + name + " listening on " + server.getAddress()
                + " client certificates: " + (need ? "required" : "optional"));
        System.out.flush();
    }
}
