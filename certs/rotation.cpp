// rotate, csr and install: a new key and certificate for this node, installed
// atomically and confirmed live on the running daemon's inbound listener.
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "certs/ca_dir.hpp"
#include "certs/commands.hpp"
#include "certs/pem_files.hpp"
#include "certs/pki.hpp"
#include "tunneld/c_ptr.hpp"
#include "tunneld/config/config.hpp"
#include "tunneld/error.hpp"
#include "tunneld/net/openssl_ptr.hpp"
#include "tunneld/tls/context.hpp"
#include "tunneld/tls/identity.hpp"

namespace tunneld::certs {

namespace {

// The node's current identity: extra SAN DNS names and IPs besides `node`.
NodeRequest current_request(const Config& cfg) {
    auto cert = read_cert(cfg.tls.cert);
    auto ids = extract_identities(cert.get());
    NodeRequest req{cfg.node, {}, ids.ips};
    for (const auto& d : ids.dns)
        if (d != cfg.node) req.dns.push_back(d);
    return req;
}

// Validates the new pair against the configured CA bundle and identity, then
// installs key and certificate atomically (old ones kept as .prev).
void install_pair(const Config& cfg, EVP_PKEY* key, X509* cert) {
    if (X509_check_private_key(cert, key) != 1) {
        ERR_clear_error();
        throw StartupError("the new certificate does not belong to the new key; nothing installed");
    }
    auto cas = read_certs(cfg.tls.ca);
    if (auto err = verify_against(cert, cas); !err.empty())
        throw StartupError("the new certificate does not verify against " + cfg.tls.ca +
                           " (tls.ca): " + err +
                           "; nothing installed (is it from the CA in tls.ca?)");
    if (!match_identity(extract_identities(cert), {cfg.node}))
        throw StartupError("the new certificate does not name this node '" + cfg.node +
                           "'; nothing installed");
    if (not_after(cert) <= std::chrono::system_clock::now())
        throw StartupError("the new certificate has already expired; nothing installed");
    write_file_atomic(cfg.tls.key, to_pem(key), 0600, true);
    write_file_atomic(cfg.tls.cert, to_pem(cert), 0644, true);
}

// One TLS 1.3 probe handshake to `host:port` as this node (ALPN tunneld-probe):
// the serial the daemon presents, or why there is none.
Result<std::string> presented_serial(const Config& cfg, const std::string& host,
                                     std::uint16_t port) {
    SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx || SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION) != 1 ||
        SSL_CTX_load_verify_locations(ctx.get(), cfg.tls.ca.c_str(), nullptr) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx.get(), cfg.tls.cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx.get(), cfg.tls.key.c_str(), SSL_FILETYPE_PEM) != 1)
        return Problem{"cannot set up a TLS client: " + openssl_errors()};
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    static const unsigned char alpn[] = "\x0dtunneld-probe";
    SSL_CTX_set_alpn_protos(ctx.get(), alpn, sizeof alpn - 1);

    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* raw = nullptr;
    int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &raw);
    AddrinfoPtr res(raw);
    if (rc != 0 || !res) return Problem{"cannot resolve " + host};
    UniqueFd fd(socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return Problem{std::string("cannot make a socket: ") + std::strerror(errno)};
    timeval tv{2, 0};
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd.get(), res->ai_addr, res->ai_addrlen) != 0)
        return Problem{std::string("cannot connect: ") + std::strerror(errno)};
    SslPtr ssl(SSL_new(ctx.get()));
    SSL_set_fd(ssl.get(), fd.get());
    SSL_set_tlsext_host_name(ssl.get(), cfg.node.c_str());
    if (SSL_connect(ssl.get()) != 1) return Problem{"handshake failed: " + openssl_errors()};
    X509* peer = SSL_get0_peer_certificate(ssl.get());
    SSL_shutdown(ssl.get());
    if (!peer) return Problem{"the daemon presented no certificate"};
    // in_place: a Problem could also be made from a string
    return Result<std::string>(boost::system::in_place_value, serial_hex(peer));
}

// Waits until the daemon's inbound listener presents `serial`.
int confirm_live(const Config& cfg, const std::string& serial, Duration timeout,
                 std::ostream& out) {
    if (!cfg.inbound) {
        out << "installed; this node has no inbound listener to confirm against. The running "
               "daemon reloads by itself within 2 s (it watches its TLS files).\n";
        return 0;
    }
    Endpoint ep = cfg.inbound->listen.front();
    std::string host = ep.host == "0.0.0.0" ? "127.0.0.1" : ep.host == "::" ? "::1" : ep.host;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    Result<std::string> seen = Problem{"not asked yet"};
    while (std::chrono::steady_clock::now() < deadline) {
        seen = presented_serial(cfg, host, ep.port);
        if (seen && *seen == serial) {
            out << "confirmed: the daemon on " << Endpoint{host, ep.port, {}}.to_string()
                << " presents serial " << serial << "\n";
            return 0;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    out << "NOT CONFIRMED: after " << format_duration(timeout) << " the daemon on "
        << Endpoint{host, ep.port, {}}.to_string() << " still presents "
        << (seen ? "serial " + *seen : "nothing (" + seen.error().what + ")")
        << "; is it running with " << cfg.path << "? Its log says why a reload failed.\n";
    return 1;
}

}  // namespace

int rotate(const RotateOptions& o, std::ostream& out) {
    auto cfg = load_config(o.peer);
    auto ca = load_ca_dir(o.ca);
    auto old_cert = read_cert(cfg.tls.cert);
    auto old_key = read_key(cfg.tls.key);
    auto type = key_type_of(old_key.get()).value_or(KeyType::ec_p256);
    auto key = generate_key(type);
    auto cert =
        issue_node_cert(current_request(cfg), key.get(), o.days, ca.cert.get(), ca.key.get());
    install_pair(cfg, key.get(), cert.get());
    out << "rotated " << cfg.node << ": serial " << serial_hex(old_cert.get()) << " -> "
        << serial_hex(cert.get()) << " (" << o.days << " days); previous pair kept as "
        << cfg.tls.cert << ".prev / " << cfg.tls.key << ".prev\n";
    return confirm_live(cfg, serial_hex(cert.get()), o.verify_timeout, out);
}

int csr(const std::string& peer, const std::string& csr_path, std::ostream& out) {
    auto cfg = load_config(peer);
    auto old_key = read_key(cfg.tls.key);
    auto key = generate_key(key_type_of(old_key.get()).value_or(KeyType::ec_p256));
    auto request = make_csr(current_request(cfg), key.get());
    std::string next = cfg.tls.key + ".next";
    write_file_atomic(next, to_pem(key.get()), 0600, false);
    if (csr_path == "-") {
        out << to_pem(request.get());
    } else {
        write_file_atomic(csr_path, to_pem(request.get()), 0644, false);
        auto req = current_request(cfg);
        std::string names = " --name " + req.name;
        for (const auto& d : req.dns) names += " --dns " + d;
        for (const auto& ip : req.ips) names += " --ip " + ip;
        out << "new key " << next << " (stays on this node); CSR for " << cfg.node << " in "
            << csr_path << "\n  on the CA machine: tunneld certs issue --ca DIR --csr " << csr_path
            << names << " --out DIR\n  then bring DIR/" << cfg.node
            << ".crt back here and run: tunneld certs install --peer " << peer << " --cert "
            << cfg.node << ".crt\n";
    }
    return 0;
}

int install(const RotateOptions& o, const std::string& cert_path, std::ostream& out) {
    auto cfg = load_config(o.peer);
    std::string next = cfg.tls.key + ".next";
    auto key = read_key(next);
    auto cert = read_cert(cert_path);
    if (X509_check_private_key(cert.get(), key.get()) != 1) {
        ERR_clear_error();
        throw StartupError(cert_path + " was not issued for the key in " + next +
                           " (made by `tunneld certs csr`); nothing installed");
    }
    auto old_cert = read_cert(cfg.tls.cert);
    install_pair(cfg, key.get(), cert.get());
    std::filesystem::remove(next);
    out << "installed " << cfg.node << ": serial " << serial_hex(old_cert.get()) << " -> "
        << serial_hex(cert.get()) << "; previous pair kept as .prev\n";
    return confirm_live(cfg, serial_hex(cert.get()), o.verify_timeout, out);
}

}  // namespace tunneld::certs
