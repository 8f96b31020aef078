export PS1="\u@classroom:\w$ "
