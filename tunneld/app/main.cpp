// tunneld: command line only. Parses options, sets up logging, and hands over
// to Daemon or run_check. Start-up errors arrive as StartupError and leave as
// one line on stderr with exit code 1.
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>
#include <cstdlib>

#include <csignal>
#include <iostream>
#include <sstream>

#include "certs/commands.hpp"
#include "firewall/commands.hpp"
#include "tunneld/app/check.hpp"
#include "tunneld/app/daemon.hpp"
#include "tunneld/app/log_format.hpp"
#include "tunneld/config/config.hpp"
#include "tunneld/error.hpp"
#include "tunneld/health/client.hpp"
#include "tunneld/health/conninfo.hpp"
#include "tunneld/tls/groups.hpp"

namespace {

// Under systemd (stderr connected to the journal: $JOURNAL_STREAM) every line
// carries its priority and no time stamp (the journal has its own); elsewhere
// plain text with a time stamp. Either way a message is one escaped line.
void set_log_format() {
    spdlog::set_formatter(tunneld::make_log_formatter(std::getenv("JOURNAL_STREAM") != nullptr));
}

int run_daemon(const std::string& path) {
    auto config = tunneld::load_config(path);
    tunneld::check_conninfo(config);
    spdlog::set_level(spdlog::level::from_str(config.log_level));
    tunneld::Daemon daemon(std::move(config));
    return daemon.run();
}

}  // namespace

int main(int argc, char** argv) {
    // OpenSSL writes to sockets with write(2); a peer that vanished must give
    // EPIPE on that one connection, not kill the process.
    std::signal(SIGPIPE, SIG_IGN);
    auto logger = spdlog::stderr_color_mt("tunneld");
    spdlog::set_default_logger(logger);
    set_log_format();

    CLI::App app{
        "tunneld: a mutual-TLS tunnel for PostgreSQL streaming replication, from a pair\n"
        "to clusters (routes[] follow the primary through a promotion; a split brain is\n"
        "refused) and Patroni (inbound.services carry its REST API and etcd on the same\n"
        "port). Run one per host: `tunneld --peer /etc/tunneld/standby.yaml`.",
        "tunneld"};
    app.set_version_flag("--version", [] {
        return std::string("tunneld ") + TUNNELD_VERSION + "\n" + tunneld::openssl_versions();
    });
    app.footer(
        "Signals: SIGHUP reloads the TLS files (live connections keep theirs) and re-resolves\n"
        "the firewall's peer addresses; SIGTERM stops accepting and drains for timeouts.shutdown.\n"
        "See README.md.");
    std::string peer_file;
    app.add_option("--peer", peer_file, "node config (YAML); runs the daemon")
        ->check(CLI::ExistingFile);

    auto* run = app.add_subcommand("run", "run the daemon (same as tunneld --peer FILE)");
    std::string run_file;
    run->add_option("--peer", run_file, "node config (YAML)")->required()->check(CLI::ExistingFile);

    auto* check = app.add_subcommand(
        "check",
        "validate config, files, key permissions, certificates, and reachability of the "
        "backend and peers; exit 0 when all pass");
    std::string check_file;
    check->add_option("--peer", check_file, "node config (YAML)")->required();
    std::string check_user;
    check->add_option(
        "--as-user", check_user,
        "judge key ownership for this user (default: tunneld, the unit's User=, when run as root)");
    auto* certs = app.add_subcommand("certs", "private CA and certificate operations");
    certs->require_subcommand(1);
    tunneld::certs::InitCaOptions init;
    auto* init_ca =
        certs->add_subcommand("init-ca", "make a private CA: DIR/ca.key (0600) and DIR/ca.crt");
    init_ca->add_option("--out", init.out, "CA directory")->required();
    init_ca->add_option("--name", init.name,
                        "CA common name (default: \"tunneld CA <date> <random>\", unique)");
    init_ca->add_option("--days", init.days, "validity")->capture_default_str();
    init_ca->add_option("--key-type", init.key_type, "ec-p256 or ed25519")->capture_default_str();

    tunneld::certs::IssueOptions iss;
    auto* issue = certs->add_subcommand(
        "issue",
        "issue a node key and certificate (SAN DNS = NAME, serverAuth+clientAuth), or sign a CSR");
    issue->add_option("--ca", iss.ca, "CA directory (from init-ca)")->required();
    issue->add_option("--name", iss.name, "node name (its identity, e.g. standby-1)");
    issue->add_option("--dns", iss.dns, "extra SAN DNS name (repeatable)");
    issue->add_option("--ip", iss.ips, "SAN IP address (repeatable)");
    issue->add_option("--days", iss.days, "validity")->capture_default_str();
    issue->add_option("--key-type", iss.key_type, "ec-p256 or ed25519 (default: the CA's)");
    issue->add_option(
        "--csr", iss.csr,
        "sign this CSR's key (from `certs csr`) for exactly --name/--dns/--ip; a CSR asking "
        "for other names is refused");
    issue->add_flag(
        "--accept-csr-sans", iss.accept_csr_sans,
        "sign the names given even though the CSR asks for others (the difference is printed)");
    issue->add_option("--out", iss.out, "output directory")->required();

    std::vector<std::string> show_files;
    auto* show =
        certs->add_subcommand("show", "describe certificates, keys and CRLs; flag problems");
    show->add_option("files", show_files, "PEM files")->required()->check(CLI::ExistingFile);

    tunneld::certs::RotateOptions rot;
    std::string rotate_ca;
    auto* rotate = certs->add_subcommand(
        "rotate",
        "new key and certificate for this node, installed atomically and confirmed live "
        "on the running daemon (which reloads by itself: it watches its TLS files)");
    rotate->add_option("--peer", rot.peer, "node config (YAML)")->required();
    rotate->add_option("--ca", rot.ca, "CA directory (from init-ca)")->required();
    rotate->add_option("--days", rot.days, "validity of the new certificate")
        ->capture_default_str();

    std::string csr_peer, csr_out = "-";
    auto* csr = certs->add_subcommand("csr",
                                      "rotation when the CA key lives elsewhere, step 1: new key "
                                      "(kept here as <tls.key>.next) and a CSR");
    csr->add_option("--peer", csr_peer, "node config (YAML)")->required();
    csr->add_option("--out", csr_out, "CSR file (- for stdout)")->capture_default_str();

    std::string install_cert;
    auto* install = certs->add_subcommand(
        "install", "step 2: install the certificate signed for that CSR, confirmed live");
    install->add_option("--peer", rot.peer, "node config (YAML)")->required();
    install->add_option("--cert", install_cert, "the signed certificate")
        ->required()
        ->check(CLI::ExistingFile);

    std::string revoke_ca, revoke_serial;
    auto* revoke =
        certs->add_subcommand("revoke", "add a certificate serial to the CA's revoked list");
    revoke->add_option("--ca", revoke_ca, "CA directory")->required();
    revoke->add_option("--serial", revoke_serial, "serial in hex (see certs show)")->required();

    std::string crl_ca, crl_out;
    int crl_days = 30;
    auto* crl =
        certs->add_subcommand("crl", "write a CRL of every revoked serial (install it as tls.crl)");
    crl->add_option("--ca", crl_ca, "CA directory")->required();
    crl->add_option("--out", crl_out, "CRL file")->required();
    crl->add_option("--days", crl_days, "until nextUpdate")->capture_default_str();
    auto* fw = app.add_subcommand("firewall", "the nftables guard (table inet tunneld) by hand");
    fw->require_subcommand(1);
    std::string fw_peer;
    auto* fw_show = fw->add_subcommand(
        "show", "what the config asks for, whether it is applied, drop counters");
    auto* fw_apply =
        fw->add_subcommand("apply", "resolve peers and replace the table now (one transaction)");
    auto* fw_remove = fw->add_subcommand("remove", "delete the table");
    for (auto* sub : {fw_show, fw_apply, fw_remove})
        sub->add_option("--peer", fw_peer, "node config (YAML)")
            ->required()
            ->check(CLI::ExistingFile);
    auto* health = app.add_subcommand(
        "health", "ask the running daemon's health endpoint; exit 0 when it answers 200, else 1");
    std::string health_peer, health_path = "/readiness";
    health->add_option("--peer", health_peer, "node config (YAML); its health.listen is asked")
        ->required()
        ->check(CLI::ExistingFile);
    health
        ->add_option(
            "--path", health_path,
            "/liveness /readiness /health /primary /replica[?lag=16MB] /read-only /sync /async "
            "/read-only-sync /patroni /status /metrics (Patroni's paths)")
        ->capture_default_str();
    int health_wait_s = 0;
    health
        ->add_option("--wait", health_wait_s,
                     "seconds to keep asking until the answer is 200 (default: ask once)")
        ->check(CLI::Range(0, 3600));
    auto* reload = app.add_subcommand(
        "reload",
        "reload the running daemon's TLS files (SIGHUP) and wait for the result; exit 0 when it "
        "succeeded, "
        "1 with the reason when not (the unit's ExecReload: systemctl reload is truthful)");
    std::string reload_peer;
    std::int64_t reload_pid = 0;
    int reload_timeout_s = 30;
    reload
        ->add_option("--peer", reload_peer,
                     "node config (YAML); its health.listen confirms the reload")
        ->required()
        ->check(CLI::ExistingFile);
    reload->add_option("--pid", reload_pid,
                       "the daemon's pid (default: $MAINPID, else what its /status reports)");
    reload->add_option("--timeout", reload_timeout_s, "seconds to wait for the reload to finish")
        ->capture_default_str()
        ->check(CLI::Range(1, 600));
    app.require_subcommand(0, 1);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }

    try {
        if (*health)
            return tunneld::run_health(health_peer, health_path, std::cout, std::cerr,
                                       std::chrono::seconds(health_wait_s));
        if (*reload) {
            std::string pid_source = "--pid";
            if (reload_pid == 0)
                if (const char* m = std::getenv("MAINPID"); m && *m) {
                    pid_source = "$MAINPID";
                    char* end = nullptr;
                    reload_pid = std::strtoll(m, &end, 10);
                    if (*end != '\0' || reload_pid == 0) reload_pid = -1;  // refused, named
                }
            // Under systemd (ExecReload) its complaint is an error in the journal.
            std::ostringstream err;
            int rc = tunneld::run_reload(reload_peer, reload_pid, pid_source,
                                         std::chrono::seconds(reload_timeout_s), std::cout, err);
            std::istringstream lines(err.str());
            for (std::string line; std::getline(lines, line);)
                std::cerr << (std::getenv("JOURNAL_STREAM") ? "<3>" : "") << line << "\n";
            return rc;
        }
        if (*check)
            return tunneld::run_check(check_file, std::cout, tunneld::firewall::check_lines,
                                      check_user);
        if (*fw_show) return tunneld::firewall::show(fw_peer, std::cout);
        if (*fw_apply) return tunneld::firewall::apply(fw_peer, std::cout);
        if (*fw_remove) return tunneld::firewall::remove(fw_peer, std::cout);
        if (*init_ca) return tunneld::certs::init_ca(init, std::cout);
        if (*issue) {
            if (iss.name.empty()) throw tunneld::StartupError("certs issue: give --name NODE");
            return tunneld::certs::issue(iss, std::cout);
        }
        if (*show) return tunneld::certs::show(show_files, std::cout);
        if (*rotate) return tunneld::certs::rotate(rot, std::cout);
        if (*csr) return tunneld::certs::csr(csr_peer, csr_out, std::cout);
        if (*install) return tunneld::certs::install(rot, install_cert, std::cout);
        if (*revoke) return tunneld::certs::revoke(revoke_ca, revoke_serial, std::cout);
        if (*crl) return tunneld::certs::crl(crl_ca, crl_out, crl_days, std::cout);
        if (*run) return run_daemon(run_file);
        if (!peer_file.empty()) return run_daemon(peer_file);
        std::cerr << app.help();
        return 1;
    } catch (const tunneld::StartupError& e) {
        spdlog::error("{}", e.what());
        return 1;
    } catch (const std::exception& e) {
        spdlog::critical("unexpected error: {}", e.what());
        return 1;
    }
}
