# %postun of the gatehouse rpm ($1: 0 on erase, 1 on upgrade). The drop-in is a
# %config(noreplace) file: rpm keeps an edited one as .rpmsave, which sshd does not read.
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -eq 0 ] && /usr/sbin/sshd -t; then
    systemctl try-reload-or-restart sshd.service >/dev/null 2>&1 || :
fi
