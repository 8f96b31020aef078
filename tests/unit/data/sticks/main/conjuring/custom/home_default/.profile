# login shells read .bashrc too
[ -f ~/.bashrc ] && . ~/.bashrc
