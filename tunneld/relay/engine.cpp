#include "tunneld/relay/engine.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>

namespace tunneld {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

namespace {

// How long the other end may take to finish after one end has gone.
constexpr auto kGoneGrace = std::chrono::milliseconds(500);

// The socket's other end is gone: it closed with data unread, or reset.
bool is_gone(const error_code& ec) {
    return ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
}

// What one end has said so far, as its reader and the other loop's writes saw it.
struct Side {
    bool eof = false;   // it half-closed: nothing more will come
    bool gone = false;  // it reset or closed under us
    bool done = false;  // its reader loop has ended
    error_code gone_ec;
};

template <class Local, class Remote>
struct Relay {
    Local local;
    Remote remote;
    ByteCounters* counters;
    Side at_local, at_remote;
    RelayResult result;
    bool failed = false;
    // gone()'s grace deadline while it waits: a reader loop that ends cuts it
    // short (cancel), so the wait is "up to 500 ms, or until the other end is done".
    // (A channel did the same at about 600 bytes per connection end: its queue.)
    asio::steady_timer* grace = nullptr;

    Relay(Local l, Remote r, ByteCounters* c) : local(l), remote(r), counters(c) {}
    void reader_ended() {
        if (grace) grace->cancel();
    }

    void close() {
        local.close();
        remote.close();
    }
    // Records the first failure (as `end`'s) and closes both ends.
    template <class End>
    void fail(const End& end, const error_code& ec) {
        if (failed) return;
        failed = true;
        result.reason = end.failure(ec);
        result.detail = ec.message();
        close();
    }
    void count(bool from_remote, std::size_t n) {
        (from_remote ? result.from_tls : result.to_tls) += n;
        if (counters)
            (from_remote ? counters->from_tls : counters->to_tls)
                .fetch_add(n, std::memory_order_relaxed);
    }
};

// `from` is gone (ends.hpp kResetIsAnEnd): pass its half-close on, give `to`
// kGoneGrace to finish as well, and end cleanly if it does.
template <class R, class From, class To>
asio::awaitable<void> gone(R& r, From& from, Side& fs, To& to, Side& ts) {
    (void)co_await to.shutdown_send();
    auto finished = [&] { return ts.eof || (ts.gone && To::kResetIsAnEnd); };
    if (!finished() && !ts.done) {
        asio::steady_timer grace(co_await asio::this_coro::executor, kGoneGrace);
        r.grace = &grace;
        (void)co_await grace.async_wait(asio::as_tuple(asio::use_awaitable));
        r.grace = nullptr;
    }
    if (!finished()) {
        r.fail(from, fs.gone_ec);
        co_return;
    }
    r.close();
    if (!r.failed)
        r.result.detail =
            std::string(from.what) + " closed with bytes unread (" + fs.gone_ec.message() + ")";
}

// One direction: from -> to, until `from` ends (EOF, gone, or a failure).
template <class R, class From, class To>
asio::awaitable<void> copy(R& r, From& from, Side& fs, To& to, Side& ts, RelayBuffer& buffer,
                           bool from_remote) {
    struct Ended {
        R& r;
        Side& s;
        ~Ended() {
            s.done = true;
            r.reader_ended();
        }
    } ended{r, fs};
    bool more = true;  // the end may have spoken before the relay started
    for (;;) {
        auto [ec, n] = co_await from.read(buffer, more);
        if ((From::kResetIsAnEnd && is_gone(ec)) || (ec == asio::error::eof && fs.gone)) {
            if (!fs.gone) fs.gone_ec = ec;
            fs.gone = true;
            co_await gone(r, from, fs, to, ts);
            co_return;
        }
        if (ec == asio::error::eof) {
            fs.eof = true;
            // If `to` already closed cleanly and left, our half-close cannot be
            // delivered; nothing is lost, so that is no error.
            if (auto sec = co_await to.shutdown_send(); sec && !ts.eof) r.fail(to, sec);
            co_return;
        }
        if (ec) {
            r.fail(from, ec);
            co_return;
        }
        if (ts.gone) {  // undeliverable: `to`'s reader decides how this ends
            buffer.used(n);
            continue;
        }
        if (auto wec = co_await to.write(buffer.get().data(), n)) {
            if (is_gone(wec) && ts.eof) {  // it had said it was done, and left
                r.close();
                co_return;
            }
            if (is_gone(wec) && To::kResetIsAnEnd) {  // its reader wakes on the dead socket
                ts.gone = true;
                ts.gone_ec = wec;
                buffer.used(n);
                continue;
            }
            r.fail(to, wec);
            co_return;
        }
        r.count(from_remote, n);
        buffer.used(n);  // passed on: the block may go back now
    }
}

}  // namespace

template <class Local, class Remote>
asio::awaitable<RelayResult> relay(Local local, Remote remote, RelayBuffers& buffers,
                                   ByteCounters* counters) {
    Relay<Local, Remote> r(local, remote, counters);
    r.local.prepare();
    r.remote.prepare();
    co_await (copy(r, r.local, r.at_local, r.remote, r.at_remote, buffers.out, false) &&
              copy(r, r.remote, r.at_remote, r.local, r.at_local, buffers.in, true));
    r.close();
    co_return r.result;
}

template asio::awaitable<RelayResult> relay(TcpEnd, TlsEnd, RelayBuffers&, ByteCounters*);
template asio::awaitable<RelayResult> relay(UnixEnd, TlsEnd, RelayBuffers&, ByteCounters*);
template asio::awaitable<RelayResult> relay(TcpEnd, TcpEnd, RelayBuffers&, ByteCounters*);
template asio::awaitable<RelayResult> relay(TcpEnd, UnixEnd, RelayBuffers&, ByteCounters*);

}  // namespace tunneld
