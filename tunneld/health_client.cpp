#include "tunneld/health_client.hpp"

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

#include "tunneld/config.hpp"
#include "tunneld/error.hpp"

namespace tunneld {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;

int run_health(const std::string& config_path, const std::string& path, std::ostream& out, std::ostream& err) {
    Config cfg;
    try {
        cfg = load_config(config_path);
    } catch (const StartupError& e) {
        err << "tunneld health: " << e.what() << "\n";
        return 1;
    }
    if (!cfg.health.enabled) {
        err << "tunneld health: " << config_path << " has health.enabled: false; there is no endpoint to ask\n";
        return 1;
    }
    if (path.empty() || path.front() != '/') {
        err << "tunneld health: --path must start with '/', e.g. /readiness\n";
        return 1;
    }
    Endpoint ep = cfg.health.listen.front();
    if (ep.host == "0.0.0.0") ep.host = "127.0.0.1";
    if (ep.host == "::") ep.host = "::1";
    const std::string url = "http://" + ep.to_string() + path;

    asio::io_context io;
    http::response<http::string_body> res;
    std::string failure;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            beast::tcp_stream stream(io);
            boost::system::error_code ec;
            auto addr = asio::ip::make_address(ep.host, ec);
            if (ec) {
                failure = "health.listen host '" + ep.host + "' is not an IP address";
                co_return;
            }
            stream.expires_after(std::chrono::seconds(5));
            auto [cec] = co_await stream.async_connect(asio::ip::tcp::endpoint(addr, ep.port),
                                                       asio::as_tuple(asio::use_awaitable));
            if (cec) {
                failure = cec.message() + " (is tunneld running with --peer " + config_path + "?)";
                co_return;
            }
            http::request<http::empty_body> req{http::verb::get, path, 11};
            req.set(http::field::host, ep.to_string());
            req.set(http::field::user_agent, "tunneld-health/" TUNNELD_VERSION);
            req.keep_alive(false);
            auto [wec, wn] = co_await http::async_write(stream, req, asio::as_tuple(asio::use_awaitable));
            beast::flat_buffer buf;
            auto [rec, rn] = wec ? std::make_tuple(wec, std::size_t{0})
                                 : co_await http::async_read(stream, buf, res, asio::as_tuple(asio::use_awaitable));
            if (wec || rec) failure = (wec ? wec : rec).message();
        },
        asio::detached);
    io.run();
    if (!failure.empty()) {
        err << "tunneld health: " << url << ": " << failure << "\n";
        return 1;
    }
    const bool ok = res.result_int() == 200;
    json::error_code jec;
    auto body = json::parse(res.body(), jec);
    auto* o = body.if_object();
    if (path.starts_with("/status") || path.starts_with("/metrics") || !o || !o->if_contains("check")) {
        out << res.body();
        if (!res.body().empty() && res.body().back() != '\n') out << "\n";
        if (!ok) err << "tunneld health: " << url << " answered " << res.result_int() << "\n";
        return ok ? 0 : 1;
    }
    out << json::value_to<std::string>(o->at("check")) << ": " << (ok ? "ok" : "FAILED (" + std::to_string(res.result_int()) + ")");
    if (auto* p = o->if_contains("problems"); p && p->is_array() && !p->get_array().empty()) {
        out << ":";
        for (const auto& item : p->get_array())
            if (item.is_string()) out << "\n  - " << item.get_string().c_str();
    }
    out << "\n";
    return ok ? 0 : 1;
}

}  // namespace tunneld
