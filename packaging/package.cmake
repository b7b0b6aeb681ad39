# Packaging: install rules and CPack settings for one .deb and one .rpm from
# the same build (cpack -G "DEB;RPM" in the build folder; scripts/package.sh).
# Layout (DESIGN.md section 8): /usr/bin/tunneld, /usr/lib/systemd/system/tunneld@.service,
# /etc/tunneld/{primary,standby}.yaml (conffiles / %config(noreplace)),
# /usr/share/man/man8/tunneld.8.gz, /usr/share/doc/tunneld/.

set(PKG ${CMAKE_CURRENT_SOURCE_DIR}/packaging)
set(PKG_OUT ${CMAKE_CURRENT_BINARY_DIR}/packaging)
file(MAKE_DIRECTORY ${PKG_OUT})

# Compressed documentation, reproducibly (gzip -9n: no name, no time stamp).
add_custom_command(OUTPUT ${PKG_OUT}/tunneld.8.gz
  COMMAND gzip -9nc ${PKG}/tunneld.8 > ${PKG_OUT}/tunneld.8.gz
  DEPENDS ${PKG}/tunneld.8 VERBATIM)
add_custom_command(OUTPUT ${PKG_OUT}/changelog.gz
  COMMAND gzip -9nc ${PKG}/changelog > ${PKG_OUT}/changelog.gz
  DEPENDS ${PKG}/changelog VERBATIM)
add_custom_target(package_docs ALL DEPENDS ${PKG_OUT}/tunneld.8.gz ${PKG_OUT}/changelog.gz)

install(FILES ${PKG}/tunneld@.service DESTINATION lib/systemd/system
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(FILES ${CMAKE_CURRENT_SOURCE_DIR}/configs/primary.yaml ${CMAKE_CURRENT_SOURCE_DIR}/configs/standby.yaml
        DESTINATION /etc/tunneld PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(FILES ${PKG_OUT}/tunneld.8.gz DESTINATION share/man/man8
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(FILES ${PKG}/copyright ${PKG_OUT}/changelog.gz ${CMAKE_CURRENT_SOURCE_DIR}/README.md
        DESTINATION share/doc/tunneld PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
# Prometheus rules (with their promtool tests), a scrape configuration and a
# Grafana dashboard over the same metrics (README.md: Monitoring).
install(FILES ${PKG}/monitoring/tunneld-rules.yml ${PKG}/monitoring/tunneld-rules.test.yml
              ${PKG}/monitoring/prometheus.yml ${PKG}/monitoring/tunneld-dashboard.json
        DESTINATION share/tunneld/monitoring PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(FILES ${PKG}/lintian-overrides DESTINATION share/lintian/overrides RENAME tunneld
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

set(CPACK_GENERATOR "DEB;RPM")
set(CPACK_PACKAGE_NAME tunneld)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "tunneld")
set(CPACK_PACKAGE_CONTACT "tunneld maintainers <packaging@example.com>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Mutual-TLS tunnel pair for PostgreSQL streaming replication")
set(CPACK_PACKAGE_DESCRIPTION
  "tunneld carries PostgreSQL streaming replication between two hosts over\nmutual TLS 1.3 with a private CA, guards the tunnel and postgres ports with\nan nftables table that Docker cannot bypass, and serves a Patroni-style\nhealth endpoint for monitors and failover routers.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_RESOURCE_FILE_LICENSE ${CMAKE_CURRENT_SOURCE_DIR}/LICENSE)

# .deb: tunneld_<version>_<arch>.deb, one package for Debian 12 and 13 and
# Ubuntu 22.04 and 24.04. The binary needs only the libraries of the ABI
# contract (CMakeLists.txt; README.md "Install"), named here as dpkg-shlibdeps
# names them on Debian 12, with one change: OpenSSL 3 is "libssl3t64" on
# Debian 13 and Ubuntu 24.04 (the 64-bit time_t rename), so either name does.
# tests/integration/test_abi_contract.py runs dpkg-shlibdeps on the packaged
# binary and fails when this list and its answer part.
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE "")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "adduser, libc6 (>= 2.34), libssl3 (>= 3.0.0) | libssl3t64 (>= 3.0.0), libpq5 (>= 9.0~), libsystemd0, libnftnl11 (>= 1.1.2), libmnl0 (>= 1.0.4-1~)")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "nftables")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${PKG}/deb/postinst ${PKG}/deb/prerm ${PKG}/deb/postrm ${PKG}/deb/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

# .rpm: tunneld-<version>.<arch>.rpm for RHEL/Rocky/Alma 9 and 10 and Fedora,
# dependencies from rpm's own find-requires: sonames with their symbol versions
# (libc.so.6(GLIBC_2.34)(64bit), libssl.so.3(OPENSSL_3.0.0)(64bit), ...), which
# those distributions' glibc, openssl-libs, libpq, systemd-libs, libnftnl and
# libmnl provide. test_abi_contract.py holds them to the contract.
set(CPACK_RPM_FILE_NAME "tunneld-${PROJECT_VERSION}.${CMAKE_SYSTEM_PROCESSOR}.rpm")
set(CPACK_RPM_PACKAGE_LICENSE "Proprietary")
set(CPACK_RPM_PACKAGE_GROUP "System Environment/Daemons")
set(CPACK_RPM_PACKAGE_URL "https://tunneld.invalid/")
set(CPACK_RPM_PACKAGE_AUTOREQ ON)
set(CPACK_RPM_PACKAGE_REQUIRES_PRE "shadow-utils")
set(CPACK_RPM_PRE_INSTALL_SCRIPT_FILE ${PKG}/rpm/pre.sh)
set(CPACK_RPM_POST_INSTALL_SCRIPT_FILE ${PKG}/rpm/post.sh)
set(CPACK_RPM_PRE_UNINSTALL_SCRIPT_FILE ${PKG}/rpm/preun.sh)
set(CPACK_RPM_POST_UNINSTALL_SCRIPT_FILE ${PKG}/rpm/postun.sh)
set(CPACK_RPM_USER_FILELIST
  "%config(noreplace) /etc/tunneld/primary.yaml"
  "%config(noreplace) /etc/tunneld/standby.yaml"
  "%dir /etc/tunneld"
  "%doc /usr/share/doc/tunneld/README.md"
  "%license /usr/share/doc/tunneld/copyright")
set(CPACK_RPM_EXCLUDE_FROM_AUTO_FILELIST_ADDITION /etc /usr/lib/systemd /usr/lib/systemd/system /usr/share/man
    /usr/share/man/man8 /usr/share/lintian /usr/share/lintian/overrides /usr/share/doc)
set(CPACK_RPM_PACKAGE_DESCRIPTION "${CPACK_PACKAGE_DESCRIPTION}")
set(CPACK_RPM_PACKAGE_RELOCATABLE OFF)
# No build-id links (they would clash between packages of other builds); the
# Packager tag names who made it. CPack has no variable for weak dependencies:
# "Recommends: nftables" (the guard's own nft is not needed, but operators
# inspect the table with it) goes into the spec's preamble from here.
set(CPACK_RPM_SPEC_MORE_DEFINE "%define _build_id_links none\n%define packager ${CPACK_PACKAGE_CONTACT}\nRecommends: nftables")

include(CPack)
