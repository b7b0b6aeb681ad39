# Included by the top-level CMakeLists.txt (one directory scope, so every
# target can reuse tunneld_net's precompiled header). One static library per
# folder, stacked without cycles; README.md ("Code layout") says what each may
# depend on and scripts/check_layers.py checks the includes and this link graph:
#
#   base (header-only vocabulary) <- config <- net <- tls <- relay <- health <- route <- app
#   certs    = tls + config           (no Beast, libpq or libsystemd)
#   firewall = net + config + nftnl   (no Beast, libpq or libsystemd)

# Our warnings, in one place.
add_library(tunneld_warnings INTERFACE)
target_compile_options(tunneld_warnings INTERFACE -Wall -Wextra -Wshadow -Wno-unused-parameter)
if(TUNNELD_WERROR)
  target_compile_options(tunneld_warnings INTERFACE -Werror)
endif()

# A library that uses Asio: declarations only (asio_impl.cpp compiles it once)
# and the heavy headers from tunneld_net's precompiled header.
function(tunneld_library name)
  add_library(${name} STATIC ${ARGN})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_definitions(${name} PUBLIC TUNNELD_VERSION="${PROJECT_VERSION}")
  target_link_libraries(${name} PUBLIC tunneld_asio tunneld_spdlog PRIVATE tunneld_warnings)
  if(NOT name STREQUAL "tunneld_net")
    target_precompile_headers(${name} REUSE_FROM tunneld_net)
    add_dependencies(${name} tunneld_net)
  endif()
endfunction()

# config/: the model and the YAML loader. No Asio, no OpenSSL, no libpq.
add_library(tunneld_config STATIC
  tunneld/config/config.cpp tunneld/config/cluster_section.cpp tunneld/config/inbound_section.cpp tunneld/config/sections.cpp tunneld/config/yaml_reader.cpp tunneld/config/duration.cpp tunneld/config/endpoint.cpp
  tunneld/config/prefix.cpp tunneld/config/key_file.cpp)
target_include_directories(tunneld_config PUBLIC ${PROJECT_SOURCE_DIR})
target_compile_definitions(tunneld_config PUBLIC TUNNELD_VERSION="${PROJECT_VERSION}")
target_link_libraries(tunneld_config PUBLIC tunneld_yaml_cpp Boost::headers PRIVATE tunneld_warnings)

# net/ carries the precompiled header every Asio-using folder reuses.
tunneld_library(tunneld_net
  tunneld/net/listener.cpp tunneld/net/dial.cpp tunneld/net/socket_options.cpp tunneld/net/io_pool.cpp tunneld/net/ticker.cpp
  tunneld/net/connection_table.cpp tunneld/net/conn_log.cpp tunneld/net/port_owner.cpp tunneld/net/spawn.cpp)
target_precompile_headers(tunneld_net PRIVATE tunneld/pch.hpp)
target_link_libraries(tunneld_net PUBLIC tunneld_config OpenSSL::Crypto)

tunneld_library(tunneld_tls
  tunneld/tls/alpn.cpp tunneld/tls/authorize.cpp tunneld/tls/context.cpp tunneld/tls/groups.cpp tunneld/tls/identity.cpp tunneld/tls/stream.cpp tunneld/tls/handshake_failure.cpp tunneld/tls/file_watch.cpp tunneld/tls/reloader.cpp)
target_link_libraries(tunneld_tls PUBLIC tunneld_net tunneld_config OpenSSL::SSL OpenSSL::Crypto)

# relay/: a connection from accept to close (pipeline.cpp), the one relay
# engine, the listeners, and the counters they keep.
tunneld_library(tunneld_relay
  tunneld/relay/engine.cpp tunneld/relay/pipeline.cpp tunneld/relay/pipeline_steps.cpp tunneld/relay/inbound.cpp
  tunneld/relay/outbound.cpp tunneld/relay/stats.cpp)
target_link_libraries(tunneld_relay PUBLIC tunneld_tls tunneld_net)

tunneld_library(tunneld_health
  tunneld/health/backend_monitor.cpp tunneld/health/backend_state.cpp tunneld/health/client.cpp tunneld/health/daemon_pid.cpp tunneld/health/conninfo.cpp
  tunneld/health/routes.cpp tunneld/health/patroni.cpp tunneld/health/patroni_leader.cpp tunneld/health/status_json.cpp tunneld/health/metrics.cpp
  tunneld/health/server.cpp tunneld/health/pg_check.cpp tunneld/health/probe.cpp tunneld/health/probe_messages.cpp)
target_link_libraries(tunneld_health PUBLIC tunneld_relay tunneld_tls tunneld_net tunneld_beast Boost::json PkgConfig::LIBPQ)

# route/: routes[] (where each new connection goes, from health's facts).
tunneld_library(tunneld_route tunneld/route/quorum.cpp tunneld/route/route_choice.cpp tunneld/route/routes.cpp)
target_link_libraries(tunneld_route PUBLIC tunneld_health tunneld_relay)

# The daemon's libraries below app/, for the tests and the fuzzers.
add_library(tunneld_core INTERFACE)
target_link_libraries(tunneld_core INTERFACE tunneld_route tunneld_health tunneld_relay tunneld_tls tunneld_net tunneld_config)

# certs/: CA and certificate operations, used by `tunneld certs`.
tunneld_library(tunneld_certs
  certs/pki.cpp certs/pem_files.cpp certs/ca_dir.cpp certs/commands.cpp certs/rotation.cpp)
target_link_libraries(tunneld_certs PUBLIC tunneld_tls tunneld_config)

# firewall/: the nftables guard (libnftnl + libmnl), used by the daemon and `tunneld firewall`.
pkg_check_modules(NFTNL REQUIRED IMPORTED_TARGET libnftnl libmnl)
tunneld_library(tunneld_firewall
  firewall/spec.cpp firewall/batch.cpp firewall/nft_socket.cpp firewall/guard.cpp firewall/keeper.cpp firewall/commands.cpp)
target_link_libraries(tunneld_firewall PUBLIC tunneld_net tunneld_config PkgConfig::NFTNL)

# app/: the daemon's wiring and `tunneld check` (main.cpp is the executable).
tunneld_library(tunneld_app tunneld/app/daemon.cpp tunneld/app/drain.cpp tunneld/app/notifier.cpp tunneld/app/snapshot_builder.cpp tunneld/app/check.cpp tunneld/app/check_routes.cpp tunneld/app/log_format.cpp)
target_link_libraries(tunneld_app PUBLIC tunneld_route tunneld_health tunneld_relay tunneld_firewall PkgConfig::SYSTEMD)
