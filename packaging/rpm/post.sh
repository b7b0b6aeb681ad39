# tunneld %post: /etc/tunneld 0750 root:tunneld; systemd told about the unit.
# No instance is enabled or started: the example configs must be edited first.
chown root:tunneld /etc/tunneld
chmod 0750 /etc/tunneld
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi
exit 0
