/*
 * The JGroups anchor of bench:replication: one sender and receivers in a JGroups 2.12 group
 * on its default UDP stack (udp.xml from the jar: IP multicast, NAKACK, UNICAST, STABLE,
 * MFC/UFC flow control, FRAG2), reliable multicast of fixed-size messages.
 *
 * bench/jgroups-anchor.ts compiles this file at bench time (javac, into a scratch directory)
 * and drives the processes through their stdin and stdout, one line per event:
 *
 *   receiver <cluster> <warm-up> <count> <max-seconds>
 *     prints READY once connected, WARM <ns> when it holds the warm-up messages, and
 *     DONE <received> <ns of the last message> <order errors> when it holds every message.
 *   sender <cluster> <members> <warm-up> <count> <bytes> <max-seconds>
 *     waits until the view has <members> members, sends the warm-up messages, prints
 *     WARMSENT, waits for a line "go" on stdin, prints START <ns>, sends <count> messages
 *     and prints SENT <ns>.
 *
 * <ns> is System.nanoTime(): CLOCK_MONOTONIC on Linux, one clock for every process of the
 * machine, so a receiver's last message and the sender's start can be subtracted.
 * Each message carries its sequence number in its first 8 bytes; a receiver counts a
 * message out of order (JGroups delivers one sender's messages in order) as an order error.
 * Every process exits by itself after <max-seconds>, whatever happens, and when its stdin
 * closes (the bench process ended).
 */
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.ByteBuffer;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.jgroups.JChannel;
import org.jgroups.Message;
import org.jgroups.ReceiverAdapter;
import org.jgroups.View;

public final class JGroupsAnchor {
    private JGroupsAnchor() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 1) usage();
        final String role = args[0];
        final int maxSeconds = Integer.parseInt(args[args.length - 1]);
        startWatchdog(maxSeconds);
        if (role.equals("receiver") && args.length == 5) {
            receiver(args[1], Long.parseLong(args[2]), Long.parseLong(args[3]));
        } else if (role.equals("sender") && args.length == 7) {
            sender(args[1], Integer.parseInt(args[2]), Long.parseLong(args[3]), Long.parseLong(args[4]), Integer.parseInt(args[5]));
        } else {
            usage();
        }
    }

    private static void usage() {
        System.err.println("usage: JGroupsAnchor receiver <cluster> <warm-up> <count> <max-seconds>");
        System.err.println("       JGroupsAnchor sender <cluster> <members> <warm-up> <count> <bytes> <max-seconds>");
        System.exit(2);
    }

    /** Bounds the process: it exits after maxSeconds, and when stdin closes (its parent is gone). */
    private static void startWatchdog(int maxSeconds) {
        Thread timer = new Thread(() -> {
            try {
                Thread.sleep(maxSeconds * 1000L);
            } catch (InterruptedException e) {
                return;
            }
            System.out.println("TIMEOUT");
            System.out.flush();
            Runtime.getRuntime().halt(3);
        }, "anchor-watchdog");
        timer.setDaemon(true);
        timer.start();
    }

    private static synchronized void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    /** Reads stdin lines on a daemon thread; "go" releases `go`, end of input halts the process. */
    private static void watchStdin(CountDownLatch go) {
        Thread reader = new Thread(() -> {
            try (BufferedReader in = new BufferedReader(new InputStreamReader(System.in))) {
                String line;
                while ((line = in.readLine()) != null) {
                    if (line.trim().equals("go") && go != null) go.countDown();
                }
            } catch (Exception e) {
                // treated as end of input
            }
            Runtime.getRuntime().halt(4);
        }, "anchor-stdin");
        reader.setDaemon(true);
        reader.start();
    }

    private static void receiver(String cluster, long warmup, long count) throws Exception {
        watchStdin(null);
        final long total = warmup + count;
        final AtomicInteger orderErrors = new AtomicInteger();
        final CountDownLatch done = new CountDownLatch(1);
        JChannel channel = new JChannel("udp.xml");
        channel.setReceiver(new ReceiverAdapter() {
            private long received;

            @Override
            public void receive(Message message) {
                // One sender's messages arrive one at a time and in order (NAKACK).
                synchronized (this) {
                    long seq = ByteBuffer.wrap(message.getRawBuffer(), message.getOffset(), 8).getLong();
                    if (seq != received) orderErrors.incrementAndGet();
                    received++;
                    if (received == warmup) say("WARM " + System.nanoTime());
                    if (received == total) {
                        say("DONE " + received + " " + System.nanoTime() + " " + orderErrors.get());
                        done.countDown();
                    }
                }
            }
        });
        channel.connect(cluster);
        say("READY");
        done.await();
        // Stay in the group until the bench stops this process: leaving early would start a
        // view change while the other receivers may still be catching up.
        Thread.sleep(Long.MAX_VALUE);
    }

    private static void sender(String cluster, int members, long warmup, long count, int bytes) throws Exception {
        final CountDownLatch go = new CountDownLatch(1);
        watchStdin(go);
        final CountDownLatch viewComplete = new CountDownLatch(1);
        JChannel channel = new JChannel("udp.xml");
        channel.setReceiver(new ReceiverAdapter() {
            @Override
            public void viewAccepted(View view) {
                say("VIEW " + view.size());
                if (view.size() >= members) viewComplete.countDown();
            }
        });
        channel.connect(cluster);
        say("READY");
        if (!viewComplete.await(60, TimeUnit.SECONDS)) {
            say("ERROR the view did not reach " + members + " members within 60 s");
            System.exit(1);
        }
        long seq = 0;
        for (long i = 0; i < warmup; i++) channel.send(message(seq++, bytes));
        say("WARMSENT");
        go.await();
        say("START " + System.nanoTime());
        for (long i = 0; i < count; i++) channel.send(message(seq++, bytes));
        say("SENT " + System.nanoTime());
        Thread.sleep(Long.MAX_VALUE);
    }

    private static Message message(long seq, int bytes) {
        byte[] payload = new byte[bytes];
        ByteBuffer.wrap(payload).putLong(seq);
        return new Message(null, null, payload);
    }
}
