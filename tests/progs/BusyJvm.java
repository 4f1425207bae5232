// A JVM a user would checkpoint: N threads counting into one HashMap (each checks that
// the map still holds the count it put last), a main thread printing a tick every
// 100 ms, and a ServerSocket on loopback (port 0, printed) answering each line with
// "pid P threads T counts C0,C1,... bad B echo LINE".
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

public class BusyJvm {
    static final Map<Integer, Long> map = new HashMap<>();
    static final AtomicLong bad = new AtomicLong();

    public static void main(String[] args) throws Exception {
        int n = Integer.parseInt(args[0]);
        for (int i = 0; i < n; i++) {
            final int me = i;
            Thread t = new Thread(() -> {
                long c = 0;
                while (true) {
                    synchronized (map) {
                        Long last = map.get(me);
                        if (last != null && last != c) bad.incrementAndGet();
                        map.put(me, ++c);
                    }
                    try { Thread.sleep(10); } catch (InterruptedException e) { return; }
                }
            }, "counter-" + i);
            t.setDaemon(true);
            t.start();
        }
        ServerSocket ss = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
        Thread server = new Thread(() -> {
            while (true) {
                try (Socket s = ss.accept()) {
                    BufferedReader in = new BufferedReader(new InputStreamReader(s.getInputStream()));
                    PrintWriter out = new PrintWriter(s.getOutputStream(), true);
                    String line = in.readLine();
                    StringBuilder counts = new StringBuilder();
                    synchronized (map) {
                        for (int i = 0; i < n; i++) {
                            if (i > 0) counts.append(',');
                            counts.append(map.getOrDefault(i, 0L));
                        }
                    }
                    out.println("pid " + ProcessHandle.current().pid() + " threads "
                                + Thread.activeCount() + " counts " + counts + " bad "
                                + bad.get() + " echo " + line);
                } catch (Exception e) {
                    System.out.println("server error " + e);
                }
            }
        }, "server");
        server.setDaemon(true);
        server.start();
        System.out.println("port " + ss.getLocalPort());
        for (long tick = 0; ; tick++) {
            System.out.println(tick);
            Thread.sleep(100);
        }
    }
}
