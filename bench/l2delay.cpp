// l2delay: a layer-2 delay line between two interfaces, for WAN labs on kernels
// without sch_netem. Every frame read on one interface is sent out of the other
// `delay` ms later (plus up to `jitter` ms, never reordering). Run it in a middle
// network namespace holding one end of each veth; turn off gro/gso/tso and
// checksum offloads on the veths (ethtool -K), so frames stay wire-sized.
//
//   l2delay IF_A IF_B DELAY_MS [JITTER_MS] [QUEUE_MB]
//
// One direction's queue holds at most QUEUE_MB (default 64) of frames; beyond
// that frames are dropped, like a router's buffer. Stops on SIGTERM/SIGINT and
// prints what it forwarded and dropped per direction.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

volatile std::sig_atomic_t stop = 0;
void on_signal(int) { stop = 1; }

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "l2delay: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(1);
}

int open_port(const char* ifname) {
    int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));
    if (fd < 0) die("socket(AF_PACKET)");
    unsigned index = if_nametoindex(ifname);
    if (!index) die(std::string("no interface ") + ifname);
    sockaddr_ll addr{};
    addr.sll_family = AF_PACKET;
    addr.sll_protocol = htons(ETH_P_ALL);
    addr.sll_ifindex = static_cast<int>(index);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("bind");
    int one = 1;  // frames we send out of this port are not read back from it
    if (::setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) != 0)
        die("PACKET_IGNORE_OUTGOING");
    int buf = 32 << 20;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf);
    return fd;
}

struct Frame {
    Clock::time_point due;
    std::vector<unsigned char> data;
};

struct Direction {
    int from = -1, to = -1;
    std::deque<Frame> queue;
    std::size_t queued_bytes = 0;
    unsigned long long forwarded = 0, dropped = 0, send_failed = 0;
};

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: l2delay IF_A IF_B DELAY_MS [JITTER_MS] [QUEUE_MB]\n");
        return 2;
    }
    const auto delay = std::chrono::microseconds(static_cast<long>(std::atof(argv[3]) * 1000));
    const auto jitter =
        std::chrono::microseconds(static_cast<long>(argc > 4 ? std::atof(argv[4]) * 1000 : 0));
    const std::size_t cap = static_cast<std::size_t>(argc > 5 ? std::atol(argv[5]) : 64) << 20;
    std::signal(SIGTERM, on_signal);
    std::signal(SIGINT, on_signal);
    int a = open_port(argv[1]), b = open_port(argv[2]);
    Direction dirs[2];
    dirs[0].from = a;
    dirs[0].to = b;
    dirs[1].from = b;
    dirs[1].to = a;
    std::mt19937_64 rng(42);
    std::uniform_int_distribution<long> jit(0, jitter.count());
    std::vector<unsigned char> buf(65536);
    std::fprintf(stderr, "l2delay: %s <-> %s, %.3f ms each way, jitter %.3f ms\n", argv[1], argv[2],
                 static_cast<double>(delay.count()) / 1000,
                 static_cast<double>(jitter.count()) / 1000);
    while (!stop) {
        // Send everything due; find the next deadline.
        auto now = Clock::now();
        auto timeout = std::chrono::nanoseconds(std::chrono::milliseconds(100));
        for (auto& d : dirs) {
            while (!d.queue.empty() && d.queue.front().due <= now) {
                auto& f = d.queue.front();
                if (::send(d.to, f.data.data(), f.data.size(), 0) < 0)
                    ++d.send_failed;
                else
                    ++d.forwarded;
                d.queued_bytes -= f.data.size();
                d.queue.pop_front();
            }
            if (!d.queue.empty())
                timeout = std::min<std::chrono::nanoseconds>(timeout, d.queue.front().due - now);
        }
        pollfd fds[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
        // ppoll: microsecond deadlines (poll's milliseconds would add up to 1 ms
        // to every frame, 10% of a 20 ms RTT).
        timespec ts{static_cast<time_t>(timeout.count() / 1'000'000'000),
                    static_cast<long>(timeout.count() % 1'000'000'000)};
        int n = ::ppoll(fds, 2, &ts, nullptr);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        for (int i = 0; i < 2; ++i) {
            if (!(fds[i].revents & POLLIN)) continue;
            auto& d = dirs[i];
            for (;;) {  // drain what is there
                ssize_t got = ::recv(d.from, buf.data(), buf.size(), 0);
                if (got <= 0) break;
                if (d.queued_bytes + static_cast<std::size_t>(got) > cap) {
                    ++d.dropped;
                    continue;
                }
                auto due = Clock::now() + delay + std::chrono::microseconds(jit(rng));
                if (!d.queue.empty() && due < d.queue.back().due) due = d.queue.back().due;
                d.queue.push_back(Frame{due, {buf.begin(), buf.begin() + got}});
                d.queued_bytes += static_cast<std::size_t>(got);
            }
        }
    }
    for (int i = 0; i < 2; ++i)
        std::fprintf(stderr,
                     "l2delay: %s -> %s forwarded %llu, dropped %llu (queue full), "
                     "send failed %llu\n",
                     argv[i == 0 ? 1 : 2], argv[i == 0 ? 2 : 1], dirs[i].forwarded, dirs[i].dropped,
                     dirs[i].send_failed);
    return 0;
}
