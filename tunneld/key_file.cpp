#include "tunneld/key_file.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace tunneld {

std::string key_file_problem(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
        return path + ": cannot read private key: " + std::strerror(errno);
    if (!S_ISREG(st.st_mode)) return path + ": private key is not a regular file";
    uid_t me = ::geteuid();
    if (st.st_uid != me && st.st_uid != 0) {
        const passwd* pw = ::getpwuid(me);
        std::string user = pw ? pw->pw_name : std::to_string(me);
        return path + " is owned by uid " + std::to_string(st.st_uid) +
               ", not by the user tunneld runs as: run chown " + user + " " + path;
    }
    if (st.st_mode & 077) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
        return path + " is group/world accessible (mode " + mode + "): run chmod 600 " + path;
    }
    if (::access(path.c_str(), R_OK) != 0)
        return path + ": cannot read private key: " + std::strerror(errno);
    return {};
}

}  // namespace tunneld
