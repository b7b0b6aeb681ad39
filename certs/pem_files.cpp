#include "certs/pem_files.hpp"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "tunneld/c_ptr.hpp"
#include "tunneld/error.hpp"
#include "tunneld/tls/context.hpp"

namespace tunneld::certs {

namespace {

BioPtr open_for_read(const std::string& path, const char* what) {
    BioPtr bio(BIO_new_file(path.c_str(), "r"));
    if (!bio) {
        ERR_clear_error();
        throw StartupError(path + ": cannot read " + what + ": " + std::strerror(errno));
    }
    return bio;
}

template <class F>
std::string pem_of(F write) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || write(bio.get()) != 1) throw StartupError("cannot encode PEM: " + openssl_errors());
    char* data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(len));
}

[[noreturn]] void sys_fail(const std::string& what) {
    throw StartupError(what + ": " + std::strerror(errno));
}

}  // namespace

X509Ptr read_cert(const std::string& path) {
    auto bio = open_for_read(path, "certificate");
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) throw StartupError(path + ": no PEM certificate found: " + openssl_errors());
    return cert;
}

std::vector<X509Ptr> read_certs(const std::string& path) {
    auto bio = open_for_read(path, "certificates");
    std::vector<X509Ptr> out;
    while (X509Ptr cert{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)})
        out.push_back(std::move(cert));
    ERR_clear_error();
    if (out.empty()) throw StartupError(path + ": no PEM certificate found");
    return out;
}

EvpPkeyPtr read_key(const std::string& path) {
    auto bio = open_for_read(path, "private key");
    EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    if (!key)
        throw StartupError(path + ": no unencrypted PEM private key found: " + openssl_errors());
    return key;
}

X509ReqPtr read_csr(const std::string& path) {
    auto bio = open_for_read(path, "certificate request");
    X509ReqPtr csr(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
    if (!csr) throw StartupError(path + ": no PEM certificate request found: " + openssl_errors());
    return csr;
}

std::string to_pem(X509* cert) {
    return pem_of([&](BIO* b) { return PEM_write_bio_X509(b, cert); });
}
std::string to_pem(X509_REQ* csr) {
    return pem_of([&](BIO* b) { return PEM_write_bio_X509_REQ(b, csr); });
}
std::string to_pem(X509_CRL* crl) {
    return pem_of([&](BIO* b) { return PEM_write_bio_X509_CRL(b, crl); });
}
std::string to_pem(EVP_PKEY* key) {
    return pem_of([&](BIO* b) {
        return PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
    });
}

void write_file_atomic(const std::string& path, const std::string& data, mode_t mode,
                       bool keep_previous) {
    namespace fs = std::filesystem;
    fs::path target(path);
    fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
    std::string tmp = (dir / ("." + target.filename().string() + ".tmp-XXXXXX")).string();
    UniqueFd fd(::mkstemp(tmp.data()));
    if (!fd) sys_fail("cannot create a file in " + dir.string());
    bool ok = ::fchmod(fd.get(), mode) == 0;
    // A replaced file keeps its owner: a key rotated by root stays readable by
    // the user the daemon runs as.
    struct stat old {};
    if (ok && ::stat(path.c_str(), &old) == 0 &&
        (old.st_uid != ::geteuid() || old.st_gid != ::getegid()))
        ok = ::fchown(fd.get(), old.st_uid, old.st_gid) == 0;
    const char* p = data.data();
    std::size_t left = data.size();
    while (ok && left > 0) {
        ssize_t n = ::write(fd.get(), p, left);
        if (n < 0 && errno == EINTR) continue;
        ok = n > 0;
        if (ok) {
            p += n;
            left -= static_cast<std::size_t>(n);
        }
    }
    ok = ok && ::fsync(fd.get()) == 0;
    int saved = errno;
    fd.reset();
    if (!ok) {
        ::unlink(tmp.c_str());
        errno = saved;
        sys_fail("cannot write " + tmp);
    }
    if (keep_previous && fs::exists(target)) {
        std::string prev = path + ".prev";
        ::unlink(prev.c_str());
        if (::link(path.c_str(), prev.c_str()) != 0) {
            saved = errno;
            ::unlink(tmp.c_str());
            errno = saved;
            sys_fail("cannot keep the previous file as " + prev);
        }
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        saved = errno;
        ::unlink(tmp.c_str());
        errno = saved;
        sys_fail("cannot install " + path);
    }
    if (UniqueFd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)); dfd)
        ::fsync(dfd.get());
}

}  // namespace tunneld::certs
