from hw.build.flow import main

main()
