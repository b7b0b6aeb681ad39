// tunneld: command line only. Parses options, sets up logging, and hands over
// to Daemon or run_check. Start-up errors arrive as StartupError and leave as
// one line on stderr with exit code 1.
#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <iostream>

#include "tunneld/check.hpp"
#include "tunneld/config.hpp"
#include "tunneld/daemon.hpp"
#include "tunneld/error.hpp"

namespace {

int run_daemon(const std::string& path) {
    auto config = tunneld::load_config(path);
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
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");

    CLI::App app{
        "tunneld: a mutual-TLS tunnel pair for PostgreSQL streaming replication.\n"
        "Run one per host: `tunneld --peer /etc/tunneld/standby.yaml`.",
        "tunneld"};
    app.set_version_flag("--version", std::string("tunneld ") + TUNNELD_VERSION);
    app.footer(
        "Signals: SIGHUP reloads the TLS files (live connections keep theirs); SIGTERM stops\n"
        "accepting and drains for timeouts.shutdown. See README.md.");
    std::string peer_file;
    app.add_option("--peer", peer_file, "node config (YAML); runs the daemon")->check(CLI::ExistingFile);

    auto* run = app.add_subcommand("run", "run the daemon (same as tunneld --peer FILE)");
    std::string run_file;
    run->add_option("--peer", run_file, "node config (YAML)")->required()->check(CLI::ExistingFile);

    auto* check = app.add_subcommand(
        "check", "validate config, files, key permissions, certificates, and reachability of the "
                 "backend and peers; exit 0 when all pass");
    std::string check_file;
    check->add_option("--peer", check_file, "node config (YAML)")->required();
    app.require_subcommand(0, 1);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }

    try {
        if (*check) return tunneld::run_check(check_file, std::cout);
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
