# Included by the top-level CMakeLists.txt (one directory scope, so every
# target can reuse tunneld_net's precompiled header). One static library per folder. What each may depend on is in README.md
# ("Code layout"); the links below say the same. relay/ and health/ know each
# other (an inbound connection may be a peer's probe; a probe logs and counts
# like a connection), which static libraries allow.
function(tunneld_library name)
  add_library(${name} STATIC ${ARGN})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_definitions(${name} PUBLIC TUNNELD_VERSION="${PROJECT_VERSION}")
  target_link_libraries(${name} PUBLIC tunneld_asio spdlog::spdlog)
  if(NOT name STREQUAL "tunneld_net")
    target_precompile_headers(${name} REUSE_FROM tunneld_net)
    add_dependencies(${name} tunneld_net)
  endif()
endfunction()

# net/ carries the precompiled header every folder reuses (Asio, OpenSSL, spdlog).
tunneld_library(tunneld_net
  tunneld/net/listener.cpp tunneld/net/dial.cpp tunneld/net/socket_options.cpp tunneld/net/io_pool.cpp
  tunneld/net/connection_table.cpp tunneld/net/port_owner.cpp tunneld/net/spawn.cpp)
target_precompile_headers(tunneld_net PRIVATE tunneld/pch.hpp)

tunneld_library(tunneld_config
  tunneld/config/config.cpp tunneld/config/yaml_reader.cpp tunneld/config/conninfo.cpp tunneld/config/duration.cpp tunneld/config/endpoint.cpp
  tunneld/config/prefix.cpp tunneld/config/key_file.cpp)
target_link_libraries(tunneld_config PUBLIC yaml-cpp PkgConfig::LIBPQ)

tunneld_library(tunneld_tls
  tunneld/tls/context.cpp tunneld/tls/identity.cpp tunneld/tls/stream.cpp tunneld/tls/file_watch.cpp tunneld/tls/reloader.cpp)
target_link_libraries(tunneld_tls PUBLIC tunneld_config OpenSSL::SSL OpenSSL::Crypto)

target_link_libraries(tunneld_net PUBLIC tunneld_tls tunneld_config)

tunneld_library(tunneld_relay
  tunneld/relay/relay.cpp tunneld/relay/inbound.cpp tunneld/relay/outbound.cpp tunneld/relay/conn_log.cpp)
target_link_libraries(tunneld_relay PUBLIC tunneld_net tunneld_tls)

tunneld_library(tunneld_health
  tunneld/health/backend_monitor.cpp tunneld/health/backend_state.cpp tunneld/health/client.cpp tunneld/health/routes.cpp tunneld/health/status_json.cpp tunneld/health/metrics.cpp
  tunneld/health/server.cpp tunneld/health/pg_check.cpp tunneld/health/probe.cpp tunneld/health/probe_messages.cpp tunneld/health/stats.cpp)
target_link_libraries(tunneld_health PUBLIC tunneld_relay tunneld_net Boost::json PkgConfig::LIBPQ)
target_link_libraries(tunneld_relay PUBLIC tunneld_health)

add_library(tunneld_core INTERFACE)
target_link_libraries(tunneld_core INTERFACE tunneld_health tunneld_relay tunneld_net tunneld_tls tunneld_config)

# app/: the daemon's wiring and `tunneld check` (main.cpp is the executable, one level up).
tunneld_library(tunneld_app tunneld/app/daemon.cpp tunneld/app/drain.cpp tunneld/app/notifier.cpp tunneld/app/snapshot_builder.cpp tunneld/app/check.cpp)
target_link_libraries(tunneld_app PUBLIC tunneld_core tunneld_firewall PkgConfig::SYSTEMD)
