// Loads PKCS12 files with the JVM's own KeyStore, as the app runtime does.
// usage: java LoadPkcs12.java MANIFEST_DIR  (reads manifest.tsv, one line per file:)
//   prints "<file>\tok\t<alias>\t<key algorithm>" or "<file>\terror\t<exception>"
// or:    java LoadPkcs12.java --file FILE --password-env VAR
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.security.*;
import java.util.*;

public class LoadPkcs12 {
    static String load(Path file, String password) {
        try {
            KeyStore ks = KeyStore.getInstance("PKCS12");
            try (var in = Files.newInputStream(file)) {
                ks.load(in, password.toCharArray());
            }
            int keys = 0; String alias = "", alg = "";
            for (String a : Collections.list(ks.aliases())) {
                if (ks.isKeyEntry(a)) {
                    Key k = ks.getKey(a, password.toCharArray());
                    keys++; alias = a; alg = k.getAlgorithm();
                }
            }
            return "ok\t" + keys + "\t" + alias + "\t" + alg;
        } catch (Throwable e) {
            Throwable root = e;
            while (root.getCause() != null) root = root.getCause();
            return "error\t" + e.getClass().getSimpleName() + ": " + String.valueOf(e.getMessage()).replace('\n', ' ')
                + (root != e ? " (cause: " + root.getClass().getSimpleName() + ": " + root.getMessage() + ")" : "");
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length >= 1 && args[0].equals("--file")) {
            String pw = System.getenv(args[2].equals("--password-env") ? args[3] : "P12_PASSWORD");
            System.out.println(args[1] + "\t" + load(Path.of(args[1]), pw == null ? "" : pw));
            return;
        }
        Path dir = Path.of(args[0]);
        List<String> lines = Files.readAllLines(dir.resolve("manifest.tsv"), StandardCharsets.UTF_8);
        for (String line : lines.subList(1, lines.size())) {
            String[] f = line.split("\t", -1);
            System.out.println(f[0] + "\t" + load(dir.resolve(f[0]), f[1]));
        }
    }
}
