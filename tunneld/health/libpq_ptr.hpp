// One owner per libpq handle type, defined once.
#pragma once
#include <libpq-fe.h>

#include "tunneld/c_ptr.hpp"

namespace tunneld {

using PgConnPtr = CPtr<PGconn, PQfinish>;
using PgResultPtr = CPtr<PGresult, PQclear>;
using PgConninfoPtr = CPtr<PQconninfoOption, PQconninfoFree>;

struct PgFreemem {
    void operator()(char* p) const { PQfreemem(p); }
};
using PgStringPtr = std::unique_ptr<char, PgFreemem>;

}  // namespace tunneld
