#include "tunneld/health/client.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json.hpp>

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>

#include "tunneld/config/config.hpp"
#include "tunneld/error.hpp"
#include "tunneld/health/daemon_pid.hpp"
#include "tunneld/net/port_owner.hpp"

namespace tunneld {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;

namespace {

struct HttpAnswer {
    std::string failure;  // connect/read error, "" when an answer came
    unsigned status = 0;
    std::string body;
};

// The address the daemon's health endpoint answers on, from the config; a
// wildcard listener is asked on loopback.
std::optional<Endpoint> health_address(const Config& cfg, const std::string& who,
                                       const std::string& config_path, std::ostream& err) {
    if (!cfg.health.enabled) {
        err << who << ": " << config_path
            << " has health.enabled: false; there is no endpoint to ask\n";
        return std::nullopt;
    }
    if (cfg.health.listen.empty()) {
        err << who << ": " << config_path
            << " has no health.listen; set one (e.g. 127.0.0.1:8766) to ask the daemon\n";
        return std::nullopt;
    }
    Endpoint ep = cfg.health.listen.front();
    if (ep.host == "0.0.0.0") ep.host = "127.0.0.1";
    if (ep.host == "::") ep.host = "::1";
    return ep;
}

HttpAnswer http_get(const Endpoint& ep, const std::string& path, const std::string& config_path) {
    asio::io_context io;
    http::response<http::string_body> res;
    HttpAnswer answer;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            beast::tcp_stream stream(io);
            boost::system::error_code ec;
            auto addr = asio::ip::make_address(ep.host, ec);
            if (ec) {
                answer.failure = "health.listen host '" + ep.host + "' is not an IP address";
                co_return;
            }
            stream.expires_after(std::chrono::seconds(5));
            auto [cec] = co_await stream.async_connect(asio::ip::tcp::endpoint(addr, ep.port),
                                                       asio::as_tuple(asio::use_awaitable));
            if (cec) {
                answer.failure =
                    cec.message() + " (is tunneld running with --peer " + config_path + "?)";
                co_return;
            }
            http::request<http::empty_body> req{http::verb::get, path, 11};
            req.set(http::field::host, ep.to_string());
            req.set(http::field::user_agent, "tunneld-health/" TUNNELD_VERSION);
            req.keep_alive(false);
            auto [wec, wn] =
                co_await http::async_write(stream, req, asio::as_tuple(asio::use_awaitable));
            beast::flat_buffer buf;
            auto [rec, rn] = wec ? std::make_tuple(wec, std::size_t{0})
                                 : co_await http::async_read(stream, buf, res,
                                                             asio::as_tuple(asio::use_awaitable));
            if (wec || rec) answer.failure = (wec ? wec : rec).message();
        },
        asio::detached);
    io.run();
    answer.status = answer.failure.empty() ? res.result_int() : 0;
    answer.body = std::move(res.body());
    return answer;
}

std::optional<Config> load_for(const std::string& who, const std::string& config_path,
                               std::ostream& err) {
    try {
        return load_config(config_path);
    } catch (const StartupError& e) {
        err << who << ": " << e.what() << "\n";
        return std::nullopt;
    }
}

}  // namespace

int run_health(const std::string& config_path, const std::string& path, std::ostream& out,
               std::ostream& err, Duration wait) {
    auto cfg = load_for("tunneld health", config_path, err);
    if (!cfg) return 1;
    if (path.empty() || path.front() != '/') {
        err << "tunneld health: --path must start with '/', e.g. /readiness\n";
        return 1;
    }
    auto ep = health_address(*cfg, "tunneld health", config_path, err);
    if (!ep) return 1;
    const std::string url = "http://" + ep->to_string() + path;
    auto res = http_get(*ep, path, config_path);
    // --wait: ask again every half second until 200 or the time is up; the last
    // answer is the one reported.
    for (auto deadline = std::chrono::steady_clock::now() + wait;
         res.status != 200 &&
         std::chrono::steady_clock::now() + std::chrono::milliseconds(500) < deadline;) {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        res = http_get(*ep, path, config_path);
    }
    if (!res.failure.empty()) {
        err << "tunneld health: " << url << ": " << res.failure << "\n";
        return 1;
    }
    const bool ok = res.status == 200;
    json::error_code jec;
    auto body = json::parse(res.body, jec);
    auto* o = body.if_object();
    // A check path's verdict is under "tunneld" (the rest is Patroni's document).
    if (o)
        if (auto* t = o->if_contains("tunneld"); t && t->is_object()) o = &t->get_object();
    if (path.starts_with("/status") || path.starts_with("/metrics") || !o ||
        !o->if_contains("check")) {
        out << res.body;
        if (!res.body.empty() && res.body.back() != '\n') out << "\n";
        if (!ok) err << "tunneld health: " << url << " answered " << res.status << "\n";
        return ok ? 0 : 1;
    }
    out << json::value_to<std::string>(o->at("check")) << ": "
        << (ok ? "ok" : "FAILED (" + std::to_string(res.status) + ")");
    if (auto* p = o->if_contains("problems"); p && p->is_array() && !p->get_array().empty()) {
        out << ":";
        for (const auto& item : p->get_array())
            if (item.is_string()) out << "\n  - " << item.get_string().c_str();
    }
    out << "\n";
    return ok ? 0 : 1;
}

namespace {

struct ReloadCount {
    std::uint64_t done = 0;  // reloads finished (ok + failed)
    std::int64_t pid = 0;
    std::string last_error;
    std::string serial;
};

std::optional<ReloadCount> reload_count(const Endpoint& ep, const std::string& config_path,
                                        std::string& failure) {
    auto res = http_get(ep, "/status", config_path);
    if (!res.failure.empty()) {
        failure = res.failure;
        return std::nullopt;
    }
    json::error_code jec;
    auto v = json::parse(res.body, jec);
    auto* o = v.if_object();
    const json::object* r = nullptr;
    if (o)
        if (auto* tls = o->if_contains("tls"); tls && tls->is_object())
            if (auto* rl = tls->get_object().if_contains("reloads"); rl && rl->is_object())
                r = &rl->get_object();
    if (!r) {
        failure = "/status answered " + std::to_string(res.status) +
                  " without tls.reloads: is this a tunneld?";
        return std::nullopt;
    }
    ReloadCount c;
    auto num = [&](const json::object& obj, const char* k) -> std::int64_t {
        auto* x = obj.if_contains(k);
        return x && x->is_int64()    ? x->get_int64()
               : x && x->is_uint64() ? static_cast<std::int64_t>(x->get_uint64())
                                     : 0;
    };
    c.done = static_cast<std::uint64_t>(num(*r, "ok") + num(*r, "failed"));
    if (auto* e = r->if_contains("last_error"); e && e->is_string())
        c.last_error = e->get_string().c_str();
    c.pid = num(*o, "pid");
    if (auto* s = o->at("tls").get_object().if_contains("cert_serial"); s && s->is_string())
        c.serial = s->get_string().c_str();
    return c;
}

}  // namespace

int run_reload(const std::string& config_path, std::int64_t pid, const std::string& pid_source,
               Duration timeout, std::ostream& out, std::ostream& err) {
    const std::string who = "tunneld reload";
    auto cfg = load_for(who, config_path, err);
    if (!cfg) return 1;
    auto ep = health_address(*cfg, who, config_path, err);
    if (!ep) {
        err << who
            << ": cannot confirm a reload without the health endpoint; to reload unconfirmed, "
               "send SIGHUP (systemctl kill -s HUP tunneld@NAME)\n";
        return 1;
    }
    std::string failure;
    auto before = reload_count(*ep, config_path, failure);
    if (!before) {
        err << who << ": http://" << ep->to_string() << "/status: " << failure << "\n";
        return 1;
    }
    // Whoever answered on health.listen is not trusted: any local user can
    // bind it while the daemon is down. A pid it names is signalled only if
    // that process holds the listening socket, and every pid only if it is
    // a tunneld running this config.
    std::string source = pid_source;
    if (pid == 0) {
        pid = before->pid;
        source = "the /status of " + ep->to_string();
        auto holders = listening_pids(ep->port);
        if (std::find(holders.begin(), holders.end(), pid) == holders.end()) {
            err << who << ": refusing to signal pid " << pid << " named by " << source << ": that process does not hold the listening socket (held by " << (holders.empty() ? std::string("a process this user cannot see") : [&] {
                std::string s;
                for (int h : holders) s += (s.empty() ? "pid " : ", pid ") + std::to_string(h);
                return s;
            }()) << "); give --pid\n";
            return 1;
        }
    }
    if (auto problem = daemon_pid_problem(pid, read_process(pid), config_path); !problem.empty()) {
        err << who << ": refusing to signal " << problem << " (from " << source
            << "); give the daemon's --pid\n";
        return 1;
    }
    if (::kill(static_cast<pid_t>(pid), SIGHUP) != 0) {
        err << who << ": cannot signal pid " << pid << ": " << std::strerror(errno)
            << (errno == EPERM ? " (run as root or as the daemon's user)" : "") << "\n";
        return 1;
    }
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        auto now = reload_count(*ep, config_path, failure);
        if (!now || now->done <= before->done) continue;
        if (!now->last_error.empty()) {
            err << who << ": reload failed: " << now->last_error << "\n";
            return 1;
        }
        out << "reloaded: serving cert serial " << now->serial << "\n";
        return 0;
    }
    err << who << ": sent SIGHUP to pid " << pid << " but no reload finished within "
        << format_duration(timeout)
        << (failure.empty() ? "" : " (last /status error: " + failure + ")")
        << "; see the daemon's log\n";
    return 1;
}

}  // namespace tunneld
