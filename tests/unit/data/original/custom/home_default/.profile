# ~/.profile
[ -f ~/.bashrc ] && . ~/.bashrc
