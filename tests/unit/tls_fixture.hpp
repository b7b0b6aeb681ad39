// Test fixtures for the TLS data path: a CA and two nodes made in memory
// (written to a temp directory, loaded as TlsMaterial), and connected sockets
// over a unix socketpair (TlsStream and the relay only need an fd).
#pragma once
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <filesystem>
#include <fstream>

#include "certs/pem_files.hpp"
#include "certs/pki.hpp"
#include "tunneld/tls/stream.hpp"

namespace tunneld::test {

namespace fs = std::filesystem;
using namespace certs;

// A CA and two nodes ("a" and "b"), written to a temp directory, loaded as TlsMaterial.
struct Pki {
    static inline int serial = 0;
    fs::path dir = fs::temp_directory_path() /
                   ("tunneld-tls-" + std::to_string(::getpid()) + "-" + std::to_string(++serial));
    std::shared_ptr<const TlsMaterial> a, b;
    std::uint64_t rekey_bytes = TlsFiles{}.rekey_bytes;
    std::vector<std::string> groups;  // tls.groups of both nodes

    explicit Pki(std::uint64_t rekey = 0, std::vector<std::string> node_groups = {"X25519"})
        : groups(std::move(node_groups)) {
        if (rekey) rekey_bytes = rekey;
        fs::create_directories(dir);
        auto ca_key = generate_key(KeyType::ec_p256);
        auto ca = make_ca_cert("unit CA", 2, ca_key.get());
        write(dir / "ca.crt", to_pem(ca.get()), fs::perms(0644));
        a = node("a", ca.get(), ca_key.get());
        b = node("b", ca.get(), ca_key.get());
    }
    ~Pki() { fs::remove_all(dir); }

    void write(const fs::path& p, const std::string& text, fs::perms mode) {
        std::ofstream(p) << text;
        fs::permissions(p, mode);
    }

    std::shared_ptr<const TlsMaterial> node(const std::string& name, X509* ca, EVP_PKEY* ca_key) {
        auto key = generate_key(KeyType::ec_p256);
        auto cert = issue_node_cert({name, {}, {}}, key.get(), 1, ca, ca_key);
        write(dir / (name + ".crt"), to_pem(cert.get()), fs::perms(0644));
        write(dir / (name + ".key"), to_pem(key.get()),
              fs::perms::owner_read | fs::perms::owner_write);
        TlsFiles files{(dir / "ca.crt").string(), (dir / (name + ".crt")).string(),
                       (dir / (name + ".key")).string(), "", groups};
        files.rekey_bytes = rekey_bytes;
        return load_tls_material(files, name, 1);
    }
};

// Connected TCP-typed sockets over a unix socketpair (TlsStream only needs an fd).
inline std::pair<asio::ip::tcp::socket, asio::ip::tcp::socket> socket_pair(asio::io_context& io) {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    asio::ip::tcp::socket x(io), y(io);
    x.assign(asio::ip::tcp::v4(), fds[0]);
    y.assign(asio::ip::tcp::v4(), fds[1]);
    return {std::move(x), std::move(y)};
}

// Node "a" (server) and node "b" (client) of `pki` over one socketpair, each allowing the other.
struct StreamPair {
    asio::io_context io;
    std::pair<asio::ip::tcp::socket, asio::ip::tcp::socket> sockets = socket_pair(io);
    TlsStream server, client;
    explicit StreamPair(const Pki& pki)
        : server{std::move(sockets.first), *pki.a, TlsStream::Role::server},
          client{std::move(sockets.second), *pki.b, TlsStream::Role::client} {
        server.peer_check().auth.allow = {"b"};
        client.peer_check().auth.allow = {"a"};
        client.set_client_params("a", kAlpnData, nullptr, 1);
    }
};

// The same pair as a test fixture.
struct Connected : ::testing::Test {
    Pki pki;
    StreamPair pair{pki};
    asio::io_context& io = pair.io;
    TlsStream& server = pair.server;
    TlsStream& client = pair.client;
};

}  // namespace tunneld::test
