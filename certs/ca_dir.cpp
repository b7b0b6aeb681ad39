#include "certs/ca_dir.hpp"

#include <openssl/x509.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <fstream>
#include <sstream>

#include "certs/pem_files.hpp"
#include "tunneld/config/key_file.hpp"
#include "tunneld/error.hpp"

namespace tunneld::certs {

CaDir load_ca_dir(const std::string& dir) {
    CaDir ca;
    ca.dir = dir;
    while (ca.dir.size() > 1 && ca.dir.back() == '/') ca.dir.pop_back();
    if (auto problem = key_file_problem(ca.key_path()); !problem.empty())
        throw StartupError(problem + " (is " + ca.dir +
                           " a directory made by `tunneld certs init-ca`?)");
    ca.cert = read_cert(ca.cert_path());
    ca.key = read_key(ca.key_path());
    if (X509_check_private_key(ca.cert.get(), ca.key.get()) != 1)
        throw StartupError(ca.key_path() + " does not belong to " + ca.cert_path());
    return ca;
}

std::vector<Revoked> read_revoked(const CaDir& ca) {
    std::vector<Revoked> out;
    std::ifstream in(ca.revoked_path());
    std::string line;
    int lineno = 0;
    while (std::getline(in, line)) {
        ++lineno;
        if (line.empty() || line[0] == '#') continue;
        std::istringstream fields(line);
        Revoked r;
        if (!(fields >> r.serial_hex >> r.revoked_at) ||
            !std::all_of(r.serial_hex.begin(), r.serial_hex.end(), ::isxdigit))
            throw StartupError(ca.revoked_path() + ":" + std::to_string(lineno) +
                               ": expected '<SERIAL-HEX> <unix-seconds>'");
        out.push_back(r);
    }
    return out;
}

bool add_revoked(const CaDir& ca, const std::string& serial_hex) {
    std::string serial = serial_hex;
    std::transform(serial.begin(), serial.end(), serial.begin(), ::toupper);
    serial.erase(0, std::min(serial.find_first_not_of('0'), serial.size()));
    auto list = read_revoked(ca);
    for (const auto& r : list) {
        std::string existing = r.serial_hex;
        std::transform(existing.begin(), existing.end(), existing.begin(), ::toupper);
        existing.erase(0, std::min(existing.find_first_not_of('0'), existing.size()));
        if (existing == serial) return false;
    }
    list.push_back({serial_hex, static_cast<std::int64_t>(std::time(nullptr))});
    std::string text =
        "# serials revoked by `tunneld certs revoke`; `tunneld certs crl` turns them into a CRL\n";
    for (const auto& r : list) text += r.serial_hex + " " + std::to_string(r.revoked_at) + "\n";
    write_file_atomic(ca.revoked_path(), text, 0644, false);
    return true;
}

}  // namespace tunneld::certs
