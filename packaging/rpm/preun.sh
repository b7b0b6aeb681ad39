# tunneld %preun: on erase ($1 = 0), stop every instance.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl stop 'tunneld@*.service' >/dev/null 2>&1 || :
fi
exit 0
