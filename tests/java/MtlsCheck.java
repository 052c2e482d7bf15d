// A mutual-TLS call on loopback, as the app runtime makes it: the client
// presents the certificate from a PKCS12 file loaded with the JVM's KeyStore.
// usage: CLIENT_PASSWORD=.. SERVER_PASSWORD=.. java MtlsCheck.java CLIENT.p12 SERVER.p12 CA.pem
// Prints the client certificate subject the server authenticated; exit 0 on success.
import java.io.*;
import java.nio.file.*;
import java.security.*;
import java.security.cert.*;
import javax.net.ssl.*;

public class MtlsCheck {
    static KeyManager[] keys(String file, String password) throws Exception {
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try (var in = Files.newInputStream(Path.of(file))) { ks.load(in, password.toCharArray()); }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(ks, password.toCharArray());
        return kmf.getKeyManagers();
    }

    static TrustManager[] trust(String caPem) throws Exception {
        KeyStore ts = KeyStore.getInstance("PKCS12");
        ts.load(null, null);
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        int i = 0;
        try (var in = Files.newInputStream(Path.of(caPem))) {
            for (var c : cf.generateCertificates(in)) ts.setCertificateEntry("ca" + i++, c);
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ts);
        return tmf.getTrustManagers();
    }

    public static void main(String[] args) throws Exception {
        SSLContext serverCtx = SSLContext.getInstance("TLS");
        serverCtx.init(keys(args[1], System.getenv("SERVER_PASSWORD")), trust(args[2]), null);
        SSLContext clientCtx = SSLContext.getInstance("TLS");
        clientCtx.init(keys(args[0], System.getenv("CLIENT_PASSWORD")), trust(args[2]), null);

        SSLServerSocket server = (SSLServerSocket) serverCtx.getServerSocketFactory()
            .createServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress());
        server.setNeedClientAuth(true);
        server.setSoTimeout(20000);
        Thread t = new Thread(() -> {
            try (SSLSocket s = (SSLSocket) server.accept()) {
                s.startHandshake();
                var peer = (X509Certificate) s.getSession().getPeerCertificates()[0];
                var out = new PrintWriter(s.getOutputStream(), true);
                out.println(peer.getSubjectX500Principal().getName());
            } catch (Exception e) {
                System.err.println("server: " + e);
            }
        });
        t.start();
        try (SSLSocket c = (SSLSocket) clientCtx.getSocketFactory().createSocket("localhost", server.getLocalPort())) {
            c.setSoTimeout(20000);
            c.startHandshake();
            String seen = new BufferedReader(new InputStreamReader(c.getInputStream())).readLine();
            if (seen == null) { System.err.println("server closed without answering"); System.exit(1); }
            System.out.println(seen);
        }
        t.join();
        server.close();
    }
}
