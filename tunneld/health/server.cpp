#include "tunneld/health/server.hpp"
#include "tunneld/net/spawn.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <list>
#include <sstream>

#include "tunneld/health/routes.hpp"
#include "tunneld/net/listener.hpp"

namespace tunneld {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using boost::system::error_code;

namespace {

constexpr auto kRequestTimeout = std::chrono::seconds(5);
constexpr auto kKeepAliveIdle = std::chrono::seconds(2);

http::response<http::string_body> respond(const http::request<http::string_body>& req,
                                          const HealthServer::SnapshotFn& snapshot) {
    http::response<http::string_body> res;
    res.version(req.version());
    res.set(http::field::server, "tunneld/" TUNNELD_VERSION);
    res.set(http::field::cache_control, "no-store");
    // OPTIONS is answered like GET, as Patroni does: HAProxy's `option httpchk
    // OPTIONS /primary` from Patroni's guides checks with it.
    if (req.method() != http::verb::get && req.method() != http::verb::head &&
        req.method() != http::verb::options) {
        res.result(http::status::method_not_allowed);
        res.set(http::field::allow, "GET, HEAD, OPTIONS");
        res.set(http::field::content_type, "text/plain");
        res.body() = "only GET, HEAD and OPTIONS\n";
    } else {
        std::string_view target(req.target().data(), req.target().size());
        auto answer = handle_request(snapshot(wants_full_snapshot(target)), target);
        res.result(answer.status);
        res.set(http::field::content_type, answer.content_type);
        res.body() = std::move(answer.body);
    }
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    if (req.method() == http::verb::head) res.body().clear();  // Content-Length stays that of GET
    return res;
}

// A reply to a request that could not be parsed; the connection closes after it.
http::response<http::string_body> refuse(http::status status, std::string text) {
    http::response<http::string_body> res{status, 11};
    res.set(http::field::server, "tunneld/" TUNNELD_VERSION);
    res.set(http::field::content_type, "text/plain");
    res.body() = std::move(text) + "\n";
    res.keep_alive(false);
    res.prepare_payload();
    return res;
}

// The status a parse error earns (431 for oversized headers, 413 for a body, 400).
http::status status_for(const error_code& ec) {
    return ec == http::error::header_limit      ? http::status::request_header_fields_too_large
           : ec == http::error::body_limit      ? http::status::payload_too_large
           : ec == http::error::buffer_overflow ? http::status::request_header_fields_too_large
                                                : http::status::bad_request;
}

void limit(http::request_parser<http::string_body>& parser) {
    parser.header_limit(8 * 1024);
    parser.body_limit(4 * 1024);
}

}  // namespace

std::string health_source(const asio::ip::address& a) {
    if (a.is_loopback()) return "loopback";
    if (a.is_v6() && a.to_v6().is_v4_mapped() &&  // ::ffff:127.x on a dual-stack listener
        asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).is_loopback())
        return "loopback";
    if (a.is_v4() && a.to_v4().to_bytes()[0] == 127) return "loopback";
    return a.to_string();
}

std::string http_answer(std::string_view request, const std::function<Snapshot(bool)>& snapshot) {
    http::request_parser<http::string_body> parser;
    limit(parser);
    parser.eager(true);
    error_code ec;
    std::size_t used = 0;
    while (!ec && used < request.size() && !parser.is_done()) {
        auto n = parser.put(asio::buffer(request.data() + used, request.size() - used), ec);
        if (ec == http::error::need_more) {
            ec = {};
            if (n == 0) break;
        }
        used += n;
    }
    std::ostringstream out;
    if (ec) {
        out << refuse(status_for(ec), "bad request: " + ec.message());
        return out.str();
    }
    if (!parser.is_done()) return "";
    out << respond(parser.get(), snapshot);
    return out.str();
}

struct HealthServer::Impl {
    IoPool pool{1, "http"};
    SnapshotFn snapshot;
    std::vector<tcp::acceptor> acceptors;
    // Open sessions, oldest first; only touched on the server thread.
    struct Open {
        std::weak_ptr<beast::tcp_stream> stream;
        std::string source;
        bool idle = true;  // waiting for a request (not answering one)
        std::uint64_t id = 0;
        bool answered = false;  // at least one request answered
        std::chrono::steady_clock::time_point opened = std::chrono::steady_clock::now();

        // Never a session still within its first request's deadline: it may
        // be a monitor's check on its way in.
        bool evictable(std::chrono::steady_clock::time_point now) const {
            return idle && (answered || now - opened >= kRequestTimeout);
        }
    };
    std::list<Open> open;
    std::uint64_t next_id = 0;

    asio::awaitable<void> session(std::shared_ptr<beast::tcp_stream> stream,
                                  std::list<Open>::iterator self) {
        struct Forget {  // the entry goes when the session ends, however it ends
            std::list<Open>& l;
            std::list<Open>::iterator it;
            ~Forget() { l.erase(it); }
        } forget{open, self};
        beast::flat_buffer buffer(16 * 1024);
        for (bool first = true;; first = false) {
            http::request_parser<http::string_body> parser;
            limit(parser);
            stream->expires_after(first ? std::chrono::seconds(kRequestTimeout)
                                        : std::chrono::seconds(kKeepAliveIdle));
            self->idle = true;
            auto [ec, n] = co_await http::async_read(*stream, buffer, parser,
                                                     asio::as_tuple(asio::use_awaitable));
            self->idle = false;
            if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
                ec == asio::error::operation_aborted)
                break;
            if (ec) {
                auto status = status_for(ec);
                if (ec.category() == http::make_error_code(http::error::bad_target).category()) {
                    auto res = refuse(status, "bad request: " + ec.message());
                    stream->expires_after(kRequestTimeout);
                    co_await http::async_write(*stream, res, asio::as_tuple(asio::use_awaitable));
                }
                break;
            }
            auto res = respond(parser.get(), snapshot);
            stream->expires_after(kRequestTimeout);
            auto [wec, wn] =
                co_await http::async_write(*stream, res, asio::as_tuple(asio::use_awaitable));
            self->answered = true;
            if (wec || !res.keep_alive()) break;
        }
        error_code ignored;
        stream->socket().shutdown(tcp::socket::shutdown_send, ignored);
        stream->close();
    }

    // Closes the longest-idle session among those `match` selects; false when
    // none of them is idle.
    template <class Match>
    bool evict_oldest_idle(Match match) {
        const auto now = std::chrono::steady_clock::now();
        for (auto& o : open)
            if (o.evictable(now) && match(o))
                if (auto s = o.stream.lock()) {
                    s->close();  // its coroutine ends with operation_aborted and erases the entry
                    o.idle = false;
                    return true;
                }
        return false;
    }

    void accepted(tcp::socket socket) {
        error_code ec;
        auto remote = socket.remote_endpoint(ec);
        if (ec) return;
        std::string source = health_source(remote.address());
        auto from_source = std::count_if(open.begin(), open.end(),
                                         [&](const Open& o) { return o.source == source; });
        bool room = true;
        if (from_source >= kMaxSessionsPerSource)
            room = evict_oldest_idle([&](const Open& o) { return o.source == source; });
        else if (static_cast<int>(open.size()) >= kMaxSessions)
            room = evict_oldest_idle([](const Open&) { return true; });
        if (!room) {
            socket.close(ec);  // every session busy answering: no more work for a flood than an
                               // accept and a close
            return;
        }
        auto stream = std::make_shared<beast::tcp_stream>(std::move(socket));
        open.push_back(Open{stream, source, true, next_id++});  // answered: no, opened: now
        spawn(stream->get_executor(), session(stream, std::prev(open.end())), "a health request");
    }
};

HealthServer::HealthServer(const std::vector<Endpoint>& listen, SnapshotFn snapshot)
    : impl_(std::make_unique<Impl>()) {
    impl_->snapshot = std::move(snapshot);
    for (const auto& ep : listen)
        impl_->acceptors.push_back(open_listener(impl_->pool.next(), ep, "health.listen"));
}

HealthServer::~HealthServer() { stop(); }

void HealthServer::start() {
    auto& io = impl_->pool.next();
    for (auto& a : impl_->acceptors) {
        spdlog::info(
            "health: listening on http://{}/ (/liveness /readiness /health /primary /replica "
            "/sync /async /patroni /status /metrics)",
            Endpoint{a.local_endpoint().address().to_string(), a.local_endpoint().port(), {}}
                .to_string());
        spawn(io,
              accept_loop(a, impl_->pool, [this](tcp::socket s) { impl_->accepted(std::move(s)); }),
              "the health accept loop");
    }
    impl_->pool.start();
}

void HealthServer::stop() {
    if (!impl_) return;
    auto* impl = impl_.get();
    asio::post(impl->pool.next(), [impl] {
        for (auto& a : impl->acceptors) {
            error_code ignored;
            a.close(ignored);
        }
        for (auto& o : impl->open)
            if (auto s = o.stream.lock()) s->close();
    });
    impl->pool.stop_when_idle();
    impl->pool.join();
    impl_.reset();
}

}  // namespace tunneld
