// The one translation unit that compiles Boost.Beast
// (BOOST_BEAST_SEPARATE_COMPILATION) and Boost.URL. Nothing else belongs here.
#include <boost/beast/src.hpp>
#include <boost/url/src.hpp>
