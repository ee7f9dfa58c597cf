from services.sink.service import main

main()
