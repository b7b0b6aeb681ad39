// Precompiled header for tunneld_core: the heavy, stable third-party headers.
#pragma once
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>
#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
