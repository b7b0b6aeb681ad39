# tunneld %postun: on upgrade ($1 >= 1), restart the instances that run.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then systemctl try-restart 'tunneld@*.service' >/dev/null 2>&1 || :; fi
fi
exit 0
