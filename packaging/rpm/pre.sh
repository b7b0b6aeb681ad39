# tunneld %pre: the system user and group.
getent group tunneld >/dev/null || groupadd -r tunneld
getent passwd tunneld >/dev/null || \
    useradd -r -g tunneld -d / -s /sbin/nologin -c "tunneld replication tunnel" tunneld
exit 0
