// tunnel_bench: the load generator and backend for bench/run.py. Plain POSIX
// sockets and threads, so that it measures the tunnel and not itself.
//
//   tunnel_bench server PORT                 backend: first byte 'S' = sink (reads to EOF,
//                                            replies with the 8-byte count), 'E' = echo
//   tunnel_bench throughput PORT STREAMS MIB each stream sends MIB MiB to a sink; prints MiB/s
//   total tunnel_bench pingpong PORT SIZE COUNT    one connection, COUNT round trips of SIZE bytes;
//                                            prints p50 and p99 in microseconds
//   tunnel_bench connect PORT SECONDS        new connection + 1-byte echo + close, repeatedly;
//                                            prints connections per second
//   tunnel_bench handshake PORT SECONDS CA CERT KEY SNI
//                                            full TLS 1.3 handshakes (no resumption) with a
//                                            client certificate; prints handshakes per second
//   tunnel_bench idle PORT COUNT             opens COUNT echo connections, does one exchange on
//                                            each, prints "ready", holds them until stdin closes
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "tunnel_bench: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(1);
}

int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

bool write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return false;
        p += w;
        n -= static_cast<size_t>(w);
    }
    return true;
}

bool read_exact(int fd, char* p, size_t n) {
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0) return false;
        p += r;
        n -= static_cast<size_t>(r);
    }
    return true;
}

void serve_one(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char mode;
    if (!read_exact(fd, &mode, 1)) return (void)close(fd);
    std::vector<char> buf(256 * 1024);
    if (mode == 'S') {
        uint64_t total = 0;
        for (;;) {
            ssize_t r = recv(fd, buf.data(), buf.size(), 0);
            if (r <= 0) break;
            total += static_cast<uint64_t>(r);
        }
        write_all(fd, reinterpret_cast<char*>(&total), sizeof total);
    } else {
        for (;;) {
            ssize_t r = recv(fd, buf.data(), buf.size(), 0);
            if (r <= 0 || !write_all(fd, buf.data(), static_cast<size_t>(r))) break;
        }
    }
    close(fd);
}

int server(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("bind");
    listen(s, 1024);
    std::printf("listening\n");
    std::fflush(stdout);
    for (;;) {
        int fd = accept(s, nullptr, nullptr);
        if (fd < 0) continue;
        std::thread(serve_one, fd).detach();
    }
}

int throughput(int port, int streams, long mib) {
    std::vector<std::thread> threads;
    std::atomic<bool> ok{true};
    auto start = Clock::now();
    for (int i = 0; i < streams; ++i) {
        threads.emplace_back([&] {
            int fd = dial(port);
            std::vector<char> buf(256 * 1024, 'x');
            buf[0] = 'S';
            uint64_t want = static_cast<uint64_t>(mib) << 20;
            uint64_t sent = 0;
            while (sent < want) {
                size_t n = std::min<uint64_t>(buf.size(), want - sent);
                if (!write_all(fd, buf.data(), n)) {
                    ok = false;
                    break;
                }
                sent += n;
                buf[0] = 'x';
            }
            shutdown(fd, SHUT_WR);
            uint64_t got = 0;
            if (!read_exact(fd, reinterpret_cast<char*>(&got), sizeof got) || got != want - 1)
                ok = false;
            close(fd);
        });
    }
    for (auto& t : threads) t.join();
    double secs = std::chrono::duration<double>(Clock::now() - start).count();
    if (!ok) {
        std::fprintf(stderr, "tunnel_bench: a stream lost bytes\n");
        return 1;
    }
    std::printf("%.1f\n", static_cast<double>(streams) * static_cast<double>(mib) / secs);
    return 0;
}

int pingpong(int port, size_t size, int count) {
    int fd = dial(port);
    std::vector<char> buf(size, 'p');
    write_all(fd, "E", 1);
    std::vector<double> us;
    for (int i = 0; i < count + 50; ++i) {
        auto t0 = Clock::now();
        if (!write_all(fd, buf.data(), size) || !read_exact(fd, buf.data(), size)) die("pingpong");
        if (i >= 50)
            us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    close(fd);
    std::sort(us.begin(), us.end());
    std::printf("%.1f %.1f\n", us[us.size() / 2], us[us.size() * 99 / 100]);
    return 0;
}

int connect_rate(int port, double seconds) {
    auto end = Clock::now() + std::chrono::duration<double>(seconds);
    long n = 0;
    auto start = Clock::now();
    while (Clock::now() < end) {
        int fd = dial(port);
        char c = 'c';
        if (!write_all(fd, "Ec", 2) || !read_exact(fd, &c, 1)) die("connect round trip");
        close(fd);
        ++n;
    }
    std::printf("%.1f\n", static_cast<double>(n) /
                              std::chrono::duration<double>(Clock::now() - start).count());
    return 0;
}

int handshake_rate(int port, double seconds, const char* ca, const char* cert, const char* key,
                   const char* sni) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 0);
    if (SSL_CTX_load_verify_locations(ctx, ca, nullptr) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        die("TLS files");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    static const unsigned char alpn[] = "\x0apostgresql";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    auto end = Clock::now() + std::chrono::duration<double>(seconds);
    auto start = Clock::now();
    long n = 0;
    while (Clock::now() < end) {
        int fd = dial(port);
        SSL* ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, sni);
        if (SSL_connect(ssl) != 1) die("handshake");
        // The server has verified us once it answers: make it prove so with a round trip.
        char c = 'c';
        if (SSL_write(ssl, "Ec", 2) != 2 || SSL_read(ssl, &c, 1) != 1) die("handshake round trip");
        SSL_shutdown(ssl);
        SSL_free(ssl);
        close(fd);
        ++n;
    }
    SSL_CTX_free(ctx);
    std::printf("%.1f\n", static_cast<double>(n) /
                              std::chrono::duration<double>(Clock::now() - start).count());
    return 0;
}

int idle(int port, int count) {
    std::vector<int> fds;
    for (int i = 0; i < count; ++i) {
        int fd = dial(port);
        char c = 0;
        if (!write_all(fd, "Ei", 2) || !read_exact(fd, &c, 1)) die("idle round trip");
        fds.push_back(fd);
    }
    std::printf("ready\n");
    std::fflush(stdout);
    char c;
    while (read(0, &c, 1) > 0) {
    }
    for (int fd : fds) close(fd);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> a(argv + 1, argv + argc);
    auto need = [&](size_t n) {
        if (a.size() < n) {
            std::fprintf(stderr, "usage: see the comment at the top of bench/tunnel_bench.cpp\n");
            std::exit(2);
        }
    };
    need(2);
    int port = std::atoi(a[1].c_str());
    if (a[0] == "server") return server(port);
    if (a[0] == "throughput")
        return need(4), throughput(port, std::atoi(a[2].c_str()), std::atol(a[3].c_str()));
    if (a[0] == "pingpong")
        return need(4),
               pingpong(port, std::strtoul(a[2].c_str(), nullptr, 10), std::atoi(a[3].c_str()));
    if (a[0] == "connect") return need(3), connect_rate(port, std::atof(a[2].c_str()));
    if (a[0] == "handshake")
        return need(7), handshake_rate(port, std::atof(a[2].c_str()), a[3].c_str(), a[4].c_str(),
                                       a[5].c_str(), a[6].c_str());
    if (a[0] == "idle") return need(3), idle(port, std::atoi(a[2].c_str()));
    need(99);
}
