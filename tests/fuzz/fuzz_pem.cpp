// PEM, CSR and CRL loading as `tunneld certs show` and `certs issue --csr` do
// it: the bytes are written to a file and read back by the same functions.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

#include "certs/commands.hpp"
#include "certs/pem_files.hpp"
#include "certs/pki.hpp"
#include "tunneld/error.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const std::string path = "/tmp/tunneld-fuzz-pem-" + std::to_string(::getpid()) + ".pem";
    {
        std::ofstream f(path, std::ios::binary | std::ios::trunc);
        f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    }
    std::ostringstream out;
    try {
        tunneld::certs::show({path}, out);
    } catch (const tunneld::StartupError&) {
    }
    try {
        auto csr = tunneld::certs::read_csr(path);
        auto contents = tunneld::certs::read_csr_contents(csr.get());
        (void)contents;
    } catch (const tunneld::StartupError&) {
    }
    return 0;
}
