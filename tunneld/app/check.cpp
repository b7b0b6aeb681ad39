#include "tunneld/app/check.hpp"
#include "tunneld/app/check_routes.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>

#include <grp.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <filesystem>
#include <fstream>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <boost/json.hpp>
#include <vector>

#include "tunneld/c_ptr.hpp"
#include "tunneld/config/config.hpp"
#include "tunneld/config/key_file.hpp"
#include "tunneld/error.hpp"
#include "tunneld/health/conninfo.hpp"
#include "tunneld/health/pg_check.hpp"
#include "tunneld/net/dial.hpp"
#include "tunneld/net/port_owner.hpp"
#include "tunneld/tls/context.hpp"
#include "tunneld/tls/groups.hpp"

namespace tunneld {

namespace asio = boost::asio;

namespace {

struct Report {
    std::ostream& out;
    int failures = 0;
    void ok(const std::string& what) { out << "ok    " << what << "\n"; }
    void warn(const std::string& what) { out << "warn  " << what << "\n"; }
    void fail(const std::string& what) {
        out << "FAIL  " << what << "\n";
        ++failures;
    }
};

void check_reachability(const Config& cfg, Report& report) {
    asio::io_context io;
    struct Target {
        std::string label;
        Endpoint ep;
        Result<void> result = Problem{"not tried"};
    };
    std::vector<Target> targets;
    if (cfg.inbound) {
        targets.push_back({"backend (inbound.backend)", cfg.inbound->backend});
        for (const auto& s : cfg.inbound->services)
            targets.push_back({"service " + s.name + " backend (ALPN " + service_alpn(s.name) +
                                   ", allow: " + fmt::format("{}", fmt::join(s.allow, ", ")) + ")",
                               s.backend});
    }
    for (const auto& p : cfg.peers)
        targets.push_back({"peer " + p.name + " (peers[].connect)", p.connect});
    for (auto& t : targets) {
        asio::co_spawn(
            io,
            [&t, &io, timeout = cfg.timeouts.connect]() -> asio::awaitable<void> {
                if (t.ep.is_unix()) {
                    asio::local::stream_protocol::socket s(io);
                    t.result = co_await dial(s, t.ep.unix_path, timeout);
                } else {
                    asio::ip::tcp::socket s(io);
                    t.result = co_await dial(s, t.ep, timeout);
                }
            },
            asio::detached);
    }
    io.run();
    for (auto& t : targets) {
        if (t.result)
            report.ok(t.label + " " + t.ep.to_string() + " accepts connections");
        else if (t.label.rfind("peer ", 0) == 0)  // on a first install the other host is not up yet
            report.warn(t.label + " " + t.ep.to_string() + " not reachable yet (" +
                        t.result.error().what +
                        "): fine while the other host is not set up; the probe keeps trying");
        else if (t.label.rfind("service ", 0) == 0)
            report.warn(t.label + " " + t.ep.to_string() + " not accepting connections yet (" +
                        t.result.error().what +
                        "): fine until that service is set up; the probe reports it meanwhile");
        else  // tunneld runs without it (a new standby's postgres comes after its base backup)
            report.warn(t.label + " " + t.ep.to_string() + " not accepting connections yet (" +
                        t.result.error().what +
                        "): fine until postgres is set up; /health reports it meanwhile");
    }
}

// Every address the daemon will listen on must be free, or held by this very
// node's running tunneld (check is run on live nodes too).
void check_listen_addresses(const Config& cfg, const std::string& config_path, Report& report) {
    std::vector<std::pair<std::string, Endpoint>> wanted;
    if (cfg.inbound) {
        for (const auto& l : cfg.inbound->listen) wanted.push_back({"inbound.listen", l});
        if (cfg.inbound->local.port) wanted.push_back({"inbound.local", cfg.inbound->local});
        for (const auto& s : cfg.inbound->services)
            if (s.local.port) wanted.push_back({"inbound.services." + s.name + ".local", s.local});
    }
    for (const auto& p : cfg.peers) {
        if (p.has_local()) wanted.push_back({"peers[" + p.name + "].local", p.local});
        for (const auto& s : p.services)
            wanted.push_back({"peers[" + p.name + "].services." + s.name, s.local});
    }
    for (const auto& r : cfg.routes) wanted.push_back({"routes[" + r.name() + "].local", r.local});
    if (cfg.health.enabled)
        for (const auto& l : cfg.health.listen) wanted.push_back({"health.listen", l});
    for (const auto& [key, ep] : wanted) {
        auto owner = listen_address_taken(ep);
        if (!owner) continue;
        auto absolute = std::filesystem::absolute(config_path).lexically_normal().string();
        bool ours = owner->command == "tunneld" &&
                    (owner->cmdline.find(" " + config_path) != std::string::npos ||
                     owner->cmdline.find(" " + absolute) != std::string::npos);
        if (ours) {
            report.ok(key + " " + ep.to_string() + " is held by this node's running tunneld (pid " +
                      std::to_string(owner->pid) + ")");
            continue;
        }
        std::string who = owner->pid ? owner->command + " (pid " + std::to_string(owner->pid) +
                                           ": " + owner->cmdline + ")"
                                     : std::string("another process (not visible to this user)");
        report.fail(key + " " + ep.to_string() + " is already in use by " + who +
                    "; choose another address");
    }
}

PostgresState query_postgres_here(const Config& cfg) {
    boost::asio::io_context io;
    PostgresCheck pg(io.get_executor(), cfg.health.postgres);
    PostgresState st;
    boost::asio::co_spawn(
        io,
        [&]() -> boost::asio::awaitable<void> { st = co_await pg.run(cfg.health.check_timeout); },
        boost::asio::detached);
    io.run();
    return st;
}

// health.postgres as the daemon will see it: peer authentication (Debian's
// `local all all peer`) depends on the OS user, so when check runs as root for
// a daemon that runs as another user, the query runs in a child process with
// that user's identity.
PostgresState query_postgres(const Config& cfg, std::optional<uid_t> daemon_uid) {
    if (::geteuid() != 0 || !daemon_uid || *daemon_uid == 0) return query_postgres_here(cfg);
    const passwd* pw = ::getpwuid(*daemon_uid);
    if (!pw) return query_postgres_here(cfg);
    std::string user = pw->pw_name;
    gid_t gid = pw->pw_gid;
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return query_postgres_here(cfg);
    UniqueFd from_child(fds[0]), to_parent(fds[1]);
    pid_t pid = ::fork();
    if (pid < 0) return query_postgres_here(cfg);
    if (pid == 0) {
        from_child.reset();
        if (::initgroups(user.c_str(), gid) != 0 || ::setgid(gid) != 0 ||
            ::setuid(*daemon_uid) != 0)
            _exit(2);
        BackendState b;
        b.postgres = query_postgres_here(cfg);
        auto text = boost::json::serialize(to_json(b));
        for (std::size_t off = 0; off < text.size();) {
            auto n = ::write(to_parent.get(), text.data() + off, text.size() - off);
            if (n <= 0) break;
            off += static_cast<std::size_t>(n);
        }
        _exit(0);
    }
    to_parent.reset();
    std::string text;
    char buf[4096];
    for (ssize_t n; (n = ::read(from_child.get(), buf, sizeof buf)) > 0;)
        text.append(buf, static_cast<std::size_t>(n));
    from_child.reset();
    int status = 0;
    ::waitpid(pid, &status, 0);
    boost::json::error_code ec;
    auto v = boost::json::parse(text, ec);
    auto b = ec ? BackendState{} : backend_state_from_json(v);
    if (b.postgres) return *b.postgres;
    PostgresState st;
    st.error = "could not run the check as " + user;
    return st;
}

// The health endpoint's address, and one status query with health.postgres,
// as the daemon's user.
void check_health(const Config& cfg, Report& report, std::optional<uid_t> daemon_uid) {
    if (!cfg.health.enabled) {
        report.ok("health endpoint off (health.enabled: false)");
        return;
    }
    std::string where;
    for (const auto& l : cfg.health.listen)
        where += (where.empty() ? "http://" : ", http://") + l.to_string() + "/";
    if (where.empty())
        report.ok(
            "health endpoint: no TCP listener (set health.listen, e.g. 127.0.0.1:8766, for "
            "monitors)");
    else
        report.ok("health endpoint on " + where);
    if (cfg.health.postgres.empty()) {
        report.ok("health.postgres not set: /primary and /replica will answer 503 (role unknown)");
        return;
    }
    auto st = query_postgres(cfg, daemon_uid);
    if (!st.up) {
        // Like the backend: tunneld runs without it; /primary and /replica answer 503 meanwhile.
        report.warn(st.answered ? st.error : "health.postgres: " + st.error);
        return;
    }
    std::string role = st.in_recovery ? "a standby (WAL receiver " +
                                            (st.receiver_status.empty()
                                                 ? std::string("not running or not visible: "
                                                               "GRANT pg_monitor to this role")
                                                 : st.receiver_status) +
                                            ")"
                                      : "the primary";
    report.ok("health.postgres answers: postgres is " + role);
}

// Which of tls.groups this host's OpenSSL offers (the ML-KEM hybrids need 3.5).
void report_groups(Report& report, const std::vector<std::string>& wanted) {
    auto have = available_groups(wanted);
    std::string offered, missing;
    for (const auto& g : wanted) {
        bool ok = std::find(have.begin(), have.end(), g) != have.end();
        (ok ? offered : missing) += ((ok ? offered : missing).empty() ? "" : ", ") + g;
    }
    std::string line = "key exchange (tls.groups): " + offered;
    if (!missing.empty()) line += "; " + missing + " not in " + OpenSSL_version(OPENSSL_VERSION);
    report.ok(line);
}

}  // namespace

// The user the daemon will run as: --as-user, else the packaged unit's
// User=tunneld when that user exists and check runs as root, else this user.
std::optional<uid_t> daemon_user(const std::string& as_user, std::string& name) {
    if (!as_user.empty()) {
        const passwd* pw = ::getpwnam(as_user.c_str());
        if (!pw) return std::nullopt;
        name = as_user;
        return pw->pw_uid;
    }
    if (::geteuid() == 0)
        if (const passwd* pw = ::getpwnam("tunneld")) {
            name = "tunneld (the unit's User=; --as-user to judge for another)";
            return pw->pw_uid;
        }
    name = "this user";
    return ::geteuid();
}

// A unix-socket backend makes every tunnelled connection the OS user the
// daemon runs as; with peer authentication (Debian's `local all all peer`)
// any allowed peer then logs in as the role of that name (tunneld, which has
// pg_monitor for health.postgres) with no password.
void check_backend_identity(const Config& cfg, Report& report) {
    if (!cfg.inbound || !cfg.inbound->backend.is_unix()) return;
    report.warn(
        "inbound.backend " + cfg.inbound->backend.to_string() +
        ": postgres sees every tunnelled connection as this daemon's OS user (tunneld), so with "
        "pg_hba's `local all all peer` (Debian's default) any allowed peer can log in as role "
        "tunneld without a password. Use inbound.backend: 127.0.0.1:5432 with pg_hba `host` "
        "lines that ask for a password (scram-sha-256), as README.md's setup does");
}

int run_check(const std::string& config_path, std::ostream& out, const ExtraCheck& extra,
              const std::string& as_user) {
    Report report{out};
    Config cfg;
    try {
        cfg = load_config(config_path);
        check_conninfo(cfg);
    } catch (const StartupError& e) {
        report.fail(std::string("config: ") + e.what());
        return 1;
    }
    report.ok("config " + config_path + " (node " + cfg.node + ", " +
              (cfg.inbound ? std::to_string(cfg.inbound->listen.size()) + " inbound listener(s), "
                           : std::string("no inbound, ")) +
              std::to_string(cfg.peers.size()) + " peer(s))");

    bool files_ok = true;
    auto readable = [&](const std::string& path, const char* key) {
        std::ifstream f(path);
        if (f) {
            report.ok(std::string("tls.") + key + " " + path + " is readable");
        } else {
            report.fail(std::string("tls.") + key + " " + path + ": " + std::strerror(errno));
            files_ok = false;
        }
    };
    readable(cfg.tls.ca, "ca");
    readable(cfg.tls.cert, "cert");
    if (!cfg.tls.crl.empty()) readable(cfg.tls.crl, "crl");
    std::string user_name, key_problem;
    auto user = daemon_user(as_user, user_name);
    if (!user) {
        report.fail("--as-user " + as_user + ": no such user");
    } else if (key_problem = key_file_problem(cfg.tls.key, user); key_problem.empty()) {
        report.ok("tls.key " + cfg.tls.key + " is private to " + user_name);
    } else {
        report.fail("tls.key " + key_problem);
    }
    // The chain, identity and expiry lines come even after a key problem: this
    // process (often root) can still read the files.
    if (files_ok) {
        try {
            auto m = load_tls_material(cfg.tls, cfg.node, 1);
            report.ok("certificate serial " + m->serial_hex +
                      ": key matches, chains to tls.ca, names " + cfg.node);
            report_groups(report, cfg.tls.groups);
            int days = m->days_left();
            if (days < 7)
                report.warn("certificate expires in " + std::to_string(days) +
                            " day(s): rotate it now");
            else if (days < 30)
                report.warn("certificate expires in " + std::to_string(days) + " days");
            else
                report.ok("certificate valid for " + std::to_string(days) + " more days");
            if (m->crl_next_update) {
                auto left = *m->crl_next_update - std::chrono::system_clock::now();
                int crl_days =
                    static_cast<int>(std::chrono::floor<std::chrono::hours>(left).count() / 24);
                if (crl_days < 7)
                    report.warn("tls.crl reaches its nextUpdate in " + std::to_string(crl_days) +
                                " day(s): publish a fresh CRL before then");
                else
                    report.ok("tls.crl valid for " + std::to_string(crl_days) + " more days");
            }
        } catch (const StartupError& e) {
            if (e.what() != key_problem) report.fail(e.what());  // the key's mode, said once above
        }
    }
    check_reachability(cfg, report);
    check_listen_addresses(cfg, config_path, report);
    check_health(cfg, report, user);
    auto emit = [&](const std::vector<CheckLine>& lines) {
        for (const auto& line : lines) {
            if (line.kind == CheckLine::ok)
                report.ok(line.text);
            else if (line.kind == CheckLine::warn)
                report.warn(line.text);
            else
                report.fail(line.text);
        }
    };
    emit(check_routes(cfg));
    check_backend_identity(cfg, report);
    if (extra) emit(extra(cfg));
    out << (report.failures ? std::to_string(report.failures) + " problem(s) found\n"
                            : std::string("all checks passed\n"));
    return report.failures ? 1 : 0;
}

}  // namespace tunneld
