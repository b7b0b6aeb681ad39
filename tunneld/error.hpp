// tunneld's one error model.
//
// Start-up problems (config, files, permissions, privileges) are thrown as
// StartupError before any traffic flows, caught once in main(), printed as one
// line and turned into exit code 1.
//
// Everything that runs after start returns its failure as a value and never
// throws: boost::system::error_code where the system has a code for it (I/O,
// resolution), and Result<T> (a boost::system::result whose error is a Problem:
// one line an operator can act on) where the failure is ours to describe
// (parsing, a probe answer, a refused check). result.value() on a failed Result
// throws StartupError with the Problem's text, so start-up code can say
// `parse_endpoint(text).value()` and let main() report it.
#pragma once
#include <boost/assert/source_location.hpp>
#include <boost/system/result.hpp>
#include <stdexcept>
#include <string>

namespace tunneld {

class StartupError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

struct Problem {
    std::string what;
    bool timed_out = false;  // the other side stayed silent until a deadline (not a refusal)
};

// Found by boost::system::result through argument-dependent lookup.
[[noreturn]] inline void throw_exception_from_error(const Problem& p,
                                                    const boost::source_location&) {
    throw StartupError(p.what);
}

// A failed one is made from its Problem: `return Problem{"no such peer"};`.
template <class T>
using Result = boost::system::result<T, Problem>;

}  // namespace tunneld
