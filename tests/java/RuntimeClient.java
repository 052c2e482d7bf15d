// An outgoing TLS call as the app runtime makes it, configured ONLY from its
// runtime settings, against a loopback server playing the partner API.
// usage: SERVER_PASSWORD=.. java RuntimeClient.java SETTINGS_DIR MOUNT_PATH FILES_DIR ENDPOINT SERVER.p12 CLIENT_CA.pem
//
// SETTINGS_DIR holds one file per setting, named ClientCertificates,
// ClientCertificatePasswords, ClientCertificateUsages, CACertificates; a missing
// file is an unset setting (one trailing newline is ignored). Every path in the
// settings starts with MOUNT_PATH + "/"; the file read is FILES_DIR/<the rest>
// (the pod's volume, copied locally). Items of the comma-separated path lists are
// trimmed and empty items skipped; passwords are taken as they are (by index).
//
// Client key: usages set and naming ENDPOINT -> that path ("" = none); usages set
// without ENDPOINT -> none; usages unset -> every ClientCertificates file is
// offered (all keys in one KeyManager, which picks by the server's requested
// issuers and key type). A file's password is the one at its index in
// ClientCertificatePasswords.
// Trust: CACertificates set -> exactly the certificates of its files, each of
// which must hold exactly one; unset -> the JVM's default trust store.
//
// Prints the client subject the server authenticated; exit 0 on success,
// 2 when the TLS handshake fails, 3 when a CACertificates file does not hold
// exactly one certificate, 4 when the settings are malformed, 1 otherwise.
import java.io.*;
import java.net.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.security.*;
import java.security.cert.*;
import java.util.*;
import javax.net.ssl.*;

public class RuntimeClient {
    static final int TIMEOUT_MS = 20000;
    static Path settingsDir, filesDir;
    static String mountPath;

    static class SettingsError extends Exception {
        SettingsError(String m) { super(m); }
    }

    static String setting(String name) throws IOException {
        Path p = settingsDir.resolve(name);
        if (!Files.exists(p)) return null;
        String v = Files.readString(p, StandardCharsets.UTF_8);
        if (v.endsWith("\r\n")) v = v.substring(0, v.length() - 2);
        else if (v.endsWith("\n")) v = v.substring(0, v.length() - 1);
        return v;
    }

    static List<String> list(String v, boolean trim) {
        List<String> out = new ArrayList<>();
        if (v == null) return out;
        for (String s : v.split(",", -1)) out.add(trim ? s.trim() : s);
        return out;
    }

    /** The local copy of a path as the runtime sees it in the pod. */
    static Path local(String path) throws SettingsError {
        String prefix = mountPath + "/";
        if (!path.startsWith(prefix)) throw new SettingsError("path " + path + " is not under " + prefix);
        Path p = filesDir.resolve(path.substring(prefix.length())).normalize();
        if (!p.startsWith(filesDir)) throw new SettingsError("path " + path + " leaves " + mountPath);
        return p;
    }

    /** A flat JSON object of string to string. */
    static Map<String, String> parseUsages(String s) throws SettingsError {
        var p = new Object() {
            int i = 0;
            void ws() { while (i < s.length() && " \t\r\n".indexOf(s.charAt(i)) >= 0) i++; }
            SettingsError err(String what) {
                return new SettingsError("ClientCertificateUsages: " + what + " at offset " + i);
            }
            void expect(char c) throws SettingsError {
                ws();
                if (i >= s.length() || s.charAt(i) != c) throw err("expected '" + c + "'");
                i++;
            }
            String str() throws SettingsError {
                expect('"');
                StringBuilder b = new StringBuilder();
                while (true) {
                    if (i >= s.length()) throw err("unterminated string");
                    char c = s.charAt(i++);
                    if (c == '"') return b.toString();
                    if (c < 0x20) throw err("control character in string");
                    if (c != '\\') { b.append(c); continue; }
                    if (i >= s.length()) throw err("unterminated escape");
                    char e = s.charAt(i++);
                    switch (e) {
                        case '"': b.append('"'); break;
                        case '\\': b.append('\\'); break;
                        case '/': b.append('/'); break;
                        case 'b': b.append('\b'); break;
                        case 'f': b.append('\f'); break;
                        case 'n': b.append('\n'); break;
                        case 'r': b.append('\r'); break;
                        case 't': b.append('\t'); break;
                        case 'u':
                            if (i + 4 > s.length()) throw err("short \\u escape");
                            try { b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); }
                            catch (NumberFormatException x) { throw err("bad \\u escape"); }
                            i += 4;
                            break;
                        default: throw err("bad escape \\" + e);
                    }
                }
            }
        };
        Map<String, String> out = new LinkedHashMap<>();
        p.expect('{');
        p.ws();
        if (p.i < s.length() && s.charAt(p.i) == '}') {
            p.i++;
        } else {
            while (true) {
                String k = p.str();
                p.expect(':');
                String v = p.str();
                if (out.put(k, v) != null) throw p.err("duplicate key \"" + k + "\"");
                p.ws();
                if (p.i < s.length() && s.charAt(p.i) == ',') { p.i++; continue; }
                p.expect('}');
                break;
            }
        }
        p.ws();
        if (p.i != s.length()) throw p.err("trailing characters");
        return out;
    }

    /** The client key material the runtime would offer for ENDPOINT (null: none). */
    static KeyManager[] clientKeys(String endpoint) throws Exception {
        List<String> certs = list(setting("ClientCertificates"), true);
        List<String> passwords = list(setting("ClientCertificatePasswords"), false);
        String usagesText = setting("ClientCertificateUsages");
        List<String> chosen = new ArrayList<>();
        if (usagesText != null) {
            Map<String, String> usages = parseUsages(usagesText);
            String path = usages.get(endpoint);
            if (path != null && !path.isEmpty()) chosen.add(path);
        } else {
            for (String c : certs) if (!c.isEmpty()) chosen.add(c);
        }
        if (chosen.isEmpty()) return null;
        char[] common = "runtime-client".toCharArray();
        KeyStore all = KeyStore.getInstance("PKCS12");
        all.load(null, null);
        int n = 0;
        for (String path : chosen) {
            int idx = certs.indexOf(path);
            if (idx < 0) throw new SettingsError("path " + path + " is not in ClientCertificates");
            if (idx >= passwords.size())
                throw new SettingsError("no ClientCertificatePasswords entry for " + path + " (index " + idx + ")");
            char[] pw = passwords.get(idx).toCharArray();
            KeyStore ks = KeyStore.getInstance("PKCS12");
            try (var in = Files.newInputStream(local(path))) { ks.load(in, pw); }
            for (String alias : Collections.list(ks.aliases())) {
                if (!ks.isKeyEntry(alias)) continue;
                all.setKeyEntry("c" + n++, ks.getKey(alias, pw), common, ks.getCertificateChain(alias));
            }
        }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(all, common);
        return kmf.getKeyManagers();
    }

    /** The runtime's trust: exactly the CACertificates, or the JVM default. */
    static TrustManager[] clientTrust() throws Exception {
        String ca = setting("CACertificates");
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        if (ca == null) {
            tmf.init((KeyStore) null);
            return tmf.getTrustManagers();
        }
        KeyStore ts = KeyStore.getInstance("PKCS12");
        ts.load(null, null);
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        int i = 0;
        for (String path : list(ca, true)) {
            if (path.isEmpty()) continue;
            Collection<? extends java.security.cert.Certificate> found;
            try (var in = Files.newInputStream(local(path))) {
                found = cf.generateCertificates(in);
            } catch (CertificateException e) {
                System.err.println("CACertificates file " + path + " holds 0 certificates (" + e + ")");
                System.exit(3);
                return null;
            }
            if (found.size() != 1) {
                System.err.println("CACertificates file " + path + " holds " + found.size() + " certificates");
                System.exit(3);
            }
            ts.setCertificateEntry("ca" + i++, found.iterator().next());
        }
        tmf.init(ts);
        return tmf.getTrustManagers();
    }

    static KeyManager[] serverKeys(String file, String password) throws Exception {
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try (var in = Files.newInputStream(Path.of(file))) { ks.load(in, password.toCharArray()); }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(ks, password.toCharArray());
        return kmf.getKeyManagers();
    }

    static TrustManager[] serverTrust(String caPem) throws Exception {
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

    static String describe(Throwable e) {
        StringBuilder b = new StringBuilder(e.toString());
        Set<Throwable> seen = Collections.newSetFromMap(new IdentityHashMap<>());
        seen.add(e);
        for (Throwable c = e.getCause(); c != null && seen.add(c); c = c.getCause())
            b.append("\n  caused by: ").append(c);
        return b.toString();
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 6) {
            System.err.println("usage: SERVER_PASSWORD=.. java RuntimeClient.java SETTINGS_DIR MOUNT_PATH FILES_DIR ENDPOINT SERVER.p12 CLIENT_CA.pem");
            System.exit(1);
        }
        settingsDir = Path.of(args[0]);
        mountPath = args[1].endsWith("/") ? args[1].substring(0, args[1].length() - 1) : args[1];
        filesDir = Path.of(args[2]).toAbsolutePath().normalize();
        String endpoint = args[3];

        SSLContext clientCtx = SSLContext.getInstance("TLS");
        try {
            clientCtx.init(clientKeys(endpoint), clientTrust(), null);
        } catch (SettingsError e) {
            System.err.println("settings: " + e.getMessage());
            System.exit(4);
        }

        String serverPassword = System.getenv("SERVER_PASSWORD");
        if (serverPassword == null) { System.err.println("SERVER_PASSWORD is not set"); System.exit(1); }
        SSLContext serverCtx = SSLContext.getInstance("TLS");
        serverCtx.init(serverKeys(args[4], serverPassword), serverTrust(args[5]), null);
        SSLServerSocket server = (SSLServerSocket) serverCtx.getServerSocketFactory()
            .createServerSocket(0, 1, InetAddress.getLoopbackAddress());
        server.setNeedClientAuth(true);
        server.setSoTimeout(TIMEOUT_MS);
        Thread t = new Thread(() -> {
            try (SSLSocket s = (SSLSocket) server.accept()) {
                s.setSoTimeout(TIMEOUT_MS);
                s.startHandshake();
                var peer = (X509Certificate) s.getSession().getPeerCertificates()[0];
                var out = new PrintWriter(new OutputStreamWriter(s.getOutputStream(), StandardCharsets.UTF_8), true);
                out.println(peer.getSubjectX500Principal().getName());
            } catch (Exception e) {
                System.err.println("server: " + describe(e));
            }
        });
        t.setDaemon(true);
        t.start();

        // The host name "localhost" for SNI and hostname verification, the
        // address the server listens on for the connection.
        int code = 0;
        try (Socket plain = new Socket()) {
            plain.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), server.getLocalPort()), TIMEOUT_MS);
            plain.setSoTimeout(TIMEOUT_MS);
            try (SSLSocket c = (SSLSocket) clientCtx.getSocketFactory()
                    .createSocket(plain, "localhost", server.getLocalPort(), true)) {
                SSLParameters params = c.getSSLParameters();
                params.setEndpointIdentificationAlgorithm("HTTPS");
                c.setSSLParameters(params);
                c.startHandshake();
                // With TLS 1.3 the server's verdict on the client certificate
                // arrives after the client's handshake is done: read it too.
                String seen = new BufferedReader(new InputStreamReader(c.getInputStream(), StandardCharsets.UTF_8)).readLine();
                if (seen == null) {
                    System.err.println("server closed without answering");
                    code = 2;
                } else {
                    System.out.println(seen);
                }
            }
        } catch (IOException e) {
            System.err.println(describe(e));
            code = 2;
        }
        t.join(TIMEOUT_MS);
        server.close();
        System.out.flush();
        System.exit(code);
    }
}
