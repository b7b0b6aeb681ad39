#include "tunneld/tls/stream.hpp"

#include "tunneld/tls/groups.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <chrono>

namespace tunneld {

using asio::as_tuple;
using asio::use_awaitable;

namespace {

constexpr std::size_t kRecordPayload = 16 * 1024;                // the most one TLS record carries
constexpr long kWriteBufferBytes = 16 * (kRecordPayload + 256);  // sixteen full TLS 1.3 records

std::string reason_text(unsigned long e) {
    const char* r = ERR_reason_error_string(e);
    return r ? r : "error " + std::to_string(ERR_GET_REASON(e));
}

// A non-blocking socket's "try again" is never the end of a connection. OpenSSL
// reports it as SSL_ERROR_SYSCALL with errno EAGAIN when the BIO that failed is
// not the one SSL_get_error asks (a reader and a writer share this SSL; the
// writer's buffer BIO sits in front of the socket): CI saw a relay end as
// peer_error "Resource temporarily unavailable" in the middle of a stream with
// 1 MB rekeying. Such a call is retried once the socket is ready, a bounded
// number of times in a row.
constexpr int kSpuriousRetries = 64;
std::atomic<int> g_would_block_reported{0};

bool is_would_block(int err) {
    if (err != SSL_ERROR_SYSCALL || (errno != EAGAIN && errno != EWOULDBLOCK)) return false;
    if (g_would_block_reported.fetch_add(1, std::memory_order_relaxed) < 3)
        spdlog::warn(
            "TLS: OpenSSL reported EAGAIN as an error; waiting for the socket and retrying");
    return true;
}

asio::socket_base::wait_type would_block_wait(SSL* ssl) {
    return SSL_want_write(ssl) ? asio::socket_base::wait_write : asio::socket_base::wait_read;
}

}  // namespace

namespace {
std::atomic<std::uint64_t> g_key_updates{0};
}  // namespace

std::uint64_t key_updates_sent() { return g_key_updates.load(std::memory_order_relaxed); }

void TlsStream::maybe_update_keys(std::size_t about_to_send) {
    if (!rekey_bytes_ || !SSL_is_init_finished(ssl_.get())) return;
    auto now = std::chrono::steady_clock::now();
    if (sent_since_rekey_ + about_to_send >= rekey_bytes_ ||
        (rekey_interval_.count() > 0 && now - last_rekey_ >= rekey_interval_)) {
        // Only marks the update: OpenSSL sends it ahead of the next record.
        // update_not_requested: our sending keys only (the peer's tunneld
        // rekeys its own direction by the same rule). Asking the peer to answer
        // would make its *reader* write a KeyUpdate, into the write buffer its
        // writer may be swapping (use_write_buffer): the stream broke that way.
        if (SSL_key_update(ssl_.get(), SSL_KEY_UPDATE_NOT_REQUESTED) == 1)
            g_key_updates.fetch_add(1, std::memory_order_relaxed);
        else
            ERR_clear_error();  // e.g. a TLS 1.2 peer (tests): nothing to update
        sent_since_rekey_ = 0;
        last_rekey_ = now;
    }
    sent_since_rekey_ += about_to_send;
}

TlsStream::TlsStream(asio::ip::tcp::socket socket, const TlsMaterial& material, Role role)
    : socket_(std::move(socket)),
      rekey_bytes_(material.rekey_bytes),
      rekey_interval_(material.rekey_interval) {
    ssl_.reset(SSL_new(role == Role::server ? material.server.get() : material.client.get()));
    if (ssl_.get()) {
        // Reads go straight to the socket (with read-ahead); so do writes, until
        // one spans several records (use_write_buffer).
        BioPtr sock(BIO_new_socket(socket_.native_handle(), BIO_NOCLOSE));
        if (!sock) {
            ssl_.reset();  // handshake() reports the failure
            return;
        }
        BIO_set_callback_arg(sock.get(), reinterpret_cast<char*>(this));
        BIO_set_callback_ex(sock.get(), &TlsStream::note_read);
        // The same BIO both ways: SSL_set_bio takes our one reference and adds
        // the second itself (ASan's leak check caught a third).
        BIO* both = sock.release();
        SSL_set_bio(ssl_.get(), both, both);
        if (role == Role::server)
            SSL_set_accept_state(ssl_.get());
        else
            SSL_set_connect_state(ssl_.get());
        attach_peer_check(ssl_.get(), &check_);
    }
    error_code ignored;
    socket_.non_blocking(true, ignored);
}

TlsStream::~TlsStream() = default;

void TlsStream::set_client_params(const std::string& sni, std::string_view alpn, SessionSlot* slot,
                                  std::uint64_t generation) {
    if (!ssl_.get()) return;
    // SNI only carries DNS names; an IP or URI identity is still checked, not sent.
    if (sni.find("://") == std::string::npos) SSL_set_tlsext_host_name(ssl_.get(), sni.c_str());
    unsigned char wire[256];
    std::size_t n = std::min<std::size_t>(alpn.size(), 255);
    wire[0] = static_cast<unsigned char>(n);
    std::memcpy(wire + 1, alpn.data(), n);
    SSL_set_alpn_protos(ssl_.get(), wire, static_cast<unsigned>(n + 1));
    if (slot) {
        attach_session_slot(ssl_.get(), slot);
        slot->offer(ssl_.get(), generation);
    }
}

// Runs `op` (an SSL_* call returning int) until it succeeds or fails for a
// reason other than WANT_READ/WANT_WRITE. Returns {ret, SSL_get_error} or
// {-1, -errno-ish} when the wait itself failed (socket closed).
template <class Op>
asio::awaitable<std::tuple<int, int>> TlsStream::drive(Op op) {
    for (int spurious = 0;;) {
        if (closed_) co_return std::tuple{-1, -1};
        ERR_clear_error();
        int ret = op();
        if (ret > 0) co_return std::tuple{ret, SSL_ERROR_NONE};
        int err = SSL_get_error(ssl_.get(), ret);
        asio::socket_base::wait_type wait;
        if (err == SSL_ERROR_WANT_READ)
            wait = asio::socket_base::wait_read;
        else if (err == SSL_ERROR_WANT_WRITE)
            wait = asio::socket_base::wait_write;
        else if (is_would_block(err) && ++spurious <= kSpuriousRetries)
            wait = would_block_wait(ssl_.get());
        else
            co_return std::tuple{ret, err};
        auto [ec] = co_await socket_.async_wait(wait, as_tuple(use_awaitable));
        if (ec) co_return std::tuple{-1, -1};
    }
}

asio::awaitable<HandshakeResult> TlsStream::handshake() {
    if (!ssl_.get())
        co_return HandshakeResult{HandshakeFailure::io_error, "cannot create SSL object"};
    auto [ret, err] = co_await drive([this] { return SSL_do_handshake(ssl_.get()); });
    if (err == SSL_ERROR_NONE) {
        if (const auto& v = confirm_peer(ssl_.get(), check_); !v.ok())
            co_return HandshakeResult{v.failure, v.detail};
        // A resumed session skips chain verification: the peer certificate it
        // carries is checked again here for expiry and against the current CRL.
        if (SSL_session_reused(ssl_.get())) {
            X509* peer = SSL_get0_peer_certificate(ssl_.get());
            if (!peer || X509_cmp_current_time(X509_get0_notAfter(peer)) <= 0)
                co_return HandshakeResult{HandshakeFailure::expired,
                                          "resumed session of an expired certificate"};
            if (is_revoked(peer, SSL_CTX_get_cert_store(SSL_get_SSL_CTX(ssl_.get()))))
                co_return HandshakeResult{HandshakeFailure::revoked,
                                          "resumed session of a revoked certificate"};
        }
        co_return HandshakeResult{};
    }
    if (err == -1) co_return HandshakeResult{HandshakeFailure::io_error, "socket closed"};
    if (!check_.unknown_service.empty() && check_.auth.protocols) {
        ERR_clear_error();
        co_return HandshakeResult{HandshakeFailure::unknown_service,
                                  "service '" + check_.unknown_service +
                                      "' is not served here (inbound.services: " +
                                      check_.auth.protocols->service_names() + ")"};
    }
    if (err == SSL_ERROR_SSL) {
        unsigned long e = ERR_peek_last_error();
        long verify = SSL_get_verify_result(ssl_.get());
        std::string text = reason_text(e);
        ERR_clear_error();
        if (ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED && verify != X509_V_OK) {
            if (verify == X509_V_ERR_APPLICATION_VERIFICATION && check_.refused_in_callback)
                co_return HandshakeResult{check_.verdict.failure, check_.verdict.detail};
            co_return HandshakeResult{classify_verify_result(verify),
                                      X509_verify_cert_error_string(verify)};
        }
        co_return HandshakeResult{classify_ssl_reason(ERR_GET_REASON(e)), text};
    }
    if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && errno == 0))
        co_return HandshakeResult{HandshakeFailure::closed, "connection closed during handshake"};
    int saved = errno;
    ERR_clear_error();
    co_return HandshakeResult{HandshakeFailure::io_error, std::strerror(saved)};
}

long TlsStream::note_read(BIO* b, int oper, const char*, std::size_t len, int, long, int ret,
                          std::size_t* done) {
    if (oper == (BIO_CB_READ | BIO_CB_RETURN))
        reinterpret_cast<TlsStream*>(BIO_get_callback_arg(b))->drained_ =
            ret > 0 && done && *done < len;
    return ret;
}

bool TlsStream::would_wait() const {
    return ssl_.get() && drained_ && !SSL_has_pending(ssl_.get());
}

asio::awaitable<error_code> TlsStream::wait_readable() {
    if (closed_) co_return error_code(asio::error::operation_aborted);
    if (!would_wait()) co_return error_code{};
    drained_ = false;
    // Idle until the peer speaks: give OpenSSL's buffers back (its 256 KiB
    // read-ahead buffer stays allocated otherwise). A no-op while a partial
    // record is held.
    SSL_free_buffers(ssl_.get());
    auto [ec] = co_await socket_.async_wait(asio::socket_base::wait_read, as_tuple(use_awaitable));
    co_return ec ? error_code(asio::error::operation_aborted) : error_code{};
}

asio::awaitable<std::tuple<error_code, std::size_t>> TlsStream::read_some(
    asio::mutable_buffer buf) {
    if (closed_) co_return std::tuple{error_code(asio::error::operation_aborted), std::size_t{0}};
    if (auto ec = co_await wait_readable())
        co_return std::tuple{error_code(asio::error::operation_aborted), std::size_t{0}};
    std::size_t n = 0;
    auto [ret, err] =
        co_await drive([&] { return SSL_read_ex(ssl_.get(), buf.data(), buf.size(), &n); });
    if (err == SSL_ERROR_NONE) {
        // Hand over every record already read ahead, so the caller writes once per
        // buffer rather than once per 16 KiB record. Stops, without waiting, as soon
        // as OpenSSL would need the socket again.
        auto* base = static_cast<char*>(buf.data());
        while (n < buf.size() && SSL_has_pending(ssl_.get())) {
            std::size_t more = 0;
            ERR_clear_error();
            if (SSL_read_ex(ssl_.get(), base + n, buf.size() - n, &more) != 1) {
                ERR_clear_error();  // the error (or EOF) shows again on the next call
                break;
            }
            n += more;
        }
        co_return std::tuple{error_code{}, n};
    }
    if (err == -1) co_return std::tuple{error_code(asio::error::operation_aborted), std::size_t{0}};
    if (err == SSL_ERROR_ZERO_RETURN)
        co_return std::tuple{error_code(asio::error::eof), std::size_t{0}};
    if (err == SSL_ERROR_SSL) {
        unsigned long e = ERR_peek_last_error();
        ERR_clear_error();
        if (ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
            co_return std::tuple{error_code(asio::ssl::error::stream_truncated), std::size_t{0}};
        co_return std::tuple{error_code(static_cast<int>(e), asio::error::get_ssl_category()),
                             std::size_t{0}};
    }
    int saved = errno;
    ERR_clear_error();
    if (saved == 0)
        co_return std::tuple{error_code(asio::ssl::error::stream_truncated), std::size_t{0}};
    co_return std::tuple{error_code(saved, asio::error::get_system_category()), std::size_t{0}};
}

void TlsStream::use_write_buffer(bool on) {
    if (on == write_buffer_ || !ssl_.get()) return;
    BIO* sock = SSL_get_rbio(ssl_.get());
    BioPtr next(on ? BIO_new(BIO_f_buffer()) : nullptr);
    if (on && (!next || BIO_set_write_buffer_size(next.get(), kWriteBufferBytes) != 1)) return;
    if (BIO_up_ref(sock) != 1) return;   // the new write side's reference
    if (on) BIO_push(next.get(), sock);  // buffer -> sock
    // Frees the old write side: the buffer BIO (empty: flushed) and its reference.
    SSL_set0_wbio(ssl_.get(), on ? next.release() : sock);
    write_buffer_ = on;
}

asio::awaitable<error_code> TlsStream::write_all(asio::const_buffer buf) {
    const auto* data = static_cast<const char*>(buf.data());
    std::size_t left = buf.size();
    maybe_update_keys(left);
    use_write_buffer(left > kRecordPayload);
    while (left > 0) {
        std::size_t n = 0;
        auto [ret, err] = co_await drive([&] { return SSL_write_ex(ssl_.get(), data, left, &n); });
        if (err != SSL_ERROR_NONE) {
            int saved = errno;
            unsigned long e = err == SSL_ERROR_SSL ? ERR_peek_last_error() : 0;
            ERR_clear_error();
            if (err == -1) co_return error_code(asio::error::operation_aborted);
            if (e) co_return error_code(static_cast<int>(e), asio::error::get_ssl_category());
            co_return error_code(saved ? saved : EPIPE, asio::error::get_system_category());
        }
        data += n;
        left -= n;
    }
    co_return co_await flush();
}

asio::awaitable<error_code> TlsStream::flush() {
    BIO* wbio = SSL_get_wbio(ssl_.get());
    for (int spurious = 0;;) {
        if (closed_) co_return error_code(asio::error::operation_aborted);
        errno = 0;
        if (BIO_flush(wbio) > 0) co_return error_code{};
        if (!BIO_should_retry(wbio) &&
            !(is_would_block(SSL_ERROR_SYSCALL) && ++spurious <= kSpuriousRetries)) {
            int saved = errno;
            ERR_clear_error();
            co_return error_code(saved ? saved : EPIPE, asio::error::get_system_category());
        }
        auto [ec] =
            co_await socket_.async_wait(asio::socket_base::wait_write, as_tuple(use_awaitable));
        if (ec) co_return ec;
    }
}

asio::awaitable<error_code> TlsStream::shutdown_send() {
    if (closed_ || !ssl_.get()) co_return error_code(asio::error::operation_aborted);
    // SSL_shutdown returns 0 once close_notify is sent (peer's not yet received).
    auto [ret, err] = co_await drive([this] {
        int r = SSL_shutdown(ssl_.get());
        return r >= 0 ? 1 : r;
    });
    ERR_clear_error();
    error_code ec = err == SSL_ERROR_NONE ? co_await flush() : error_code(asio::error::broken_pipe);
    error_code sec;
    socket_.shutdown(asio::socket_base::shutdown_send, sec);
    co_return ec ? ec : sec;
}

void TlsStream::close() {
    closed_ = true;
    // The BIO keeps the fd number; point it nowhere before the number is freed.
    if (ssl_.get())
        if (BIO* sock = SSL_get_rbio(ssl_.get())) BIO_set_fd(sock, -1, BIO_NOCLOSE);
    error_code ignored;
    socket_.close(ignored);
}

std::string TlsStream::alpn() const {
    const unsigned char* p = nullptr;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl_.get(), &p, &len);
    return std::string(reinterpret_cast<const char*>(p), len);
}

bool TlsStream::resumed() const { return SSL_session_reused(ssl_.get()) == 1; }

std::string TlsStream::group() const { return negotiated_group(ssl_.get()); }

}  // namespace tunneld

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>

namespace tunneld {

asio::awaitable<HandshakeResult> handshake_within(TlsStream& stream, Duration timeout) {
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer timer(stream.socket().get_executor(), timeout);
    auto winner = co_await (stream.handshake() || timer.async_wait(as_tuple(use_awaitable)));
    if (winner.index() == 1) {
        stream.close();
        co_return HandshakeResult{HandshakeFailure::timeout,
                                  "no complete handshake within " + format_duration(timeout)};
    }
    co_return std::get<0>(std::move(winner));
}

}  // namespace tunneld
