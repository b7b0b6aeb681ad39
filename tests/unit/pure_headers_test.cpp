// The health endpoint's routes and the config model are pure: including them
// brings in neither Asio nor OpenSSL (this file is compiled without the
// precompiled header, so anything they pull in shows here).
#include <gtest/gtest.h>

#include "tunneld/base/outcome.hpp"
#include "tunneld/config/config.hpp"
#include "tunneld/health/routes.hpp"
#include "tunneld/health/snapshot.hpp"

#ifdef BOOST_ASIO_VERSION
#error "routes/config headers include Boost.Asio"
#endif
#ifdef OPENSSL_VERSION_NUMBER
#error "routes/config headers include OpenSSL"
#endif

TEST(PureHeaders, RoutesAndConfigCompileWithoutAsioOrOpenSsl) { SUCCEED(); }
